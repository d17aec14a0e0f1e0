"""One error hierarchy. Library code raises these; only edcli.cli turns them into exit codes."""


class EdError(Exception):
    """A user-facing error: the message names the file or value and what to do."""

    exit_code = 1


class ConfigError(EdError):
    """A bad option value or combination."""


class UsageError(ConfigError):
    """An option value outside what the option allows (or a missing required option): bad usage, exit 2."""

    exit_code = 2


class WriteError(EdError):
    """A file that cannot be written (read-only folder, no space left, permission): names the path and the cause."""


class LockedError(EdError):
    """A folder another running `ed` command is writing (its run folder or store entry): names it and its pid."""


class DataError(EdError):
    """A dataset folder, image or mask that is missing, unreadable or laid out wrongly."""


class WeightsError(EdError):
    """Backbone weights that cannot be found, downloaded or loaded."""


class StoreError(EdError):
    """A feature-store file that is missing, stale, corrupt or made with other settings."""


class CheckpointError(EdError):
    """A checkpoint that is missing, corrupt or incompatible."""


class TrainingError(EdError):
    """Training that cannot go on (e.g. a non-finite loss)."""


class DistributedError(EdError):
    """A failure on another rank of a torchrun job."""


class DependencyError(EdError):
    """An optional package that a command needs is not installed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (what schedulers and `kill` send) or SIGHUP (the terminal closed), raised where Ctrl-C would be so
    that everything that keeps work safe on Ctrl-C (temp files removed, the resume state saved) does so on these
    too; exit code 128 + the signal's number (143, 129)."""

    def __init__(self, signum: int = 15) -> None:
        import signal

        super().__init__(signum)
        self.signum = int(signum)
        self.name = signal.Signals(self.signum).name


TERMINATING = ("SIGTERM", "SIGHUP")  # the signals `ed` turns into Terminated (SIGHUP does not exist on Windows)


def raise_terminated(signum, frame) -> None:
    """The SIGTERM/SIGHUP handler `ed` installs for a command's life."""
    raise Terminated(signum)
