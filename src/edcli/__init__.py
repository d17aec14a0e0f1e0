"""edcli: the `ed` command-line tool for unsupervised image anomaly detection with ED (Emphasize Differences)."""
from edcli.version import __version__

__all__ = ["__version__"]
