"""Static bash, zsh and fish completion scripts, generated from the click command the CLI hands over."""
from __future__ import annotations


def _completion_model(root) -> list[tuple[str, str, list[tuple[str, str, bool]]]]:
    """(command, help, [(option, help, takes_value)]) for every visible command of the click group `root`."""
    model = []
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        if cmd.hidden:
            continue
        opts = []
        for p in cmd.params:
            if p.param_type_name != "option":
                continue
            for o in [*p.opts, *p.secondary_opts]:
                if o.startswith("--"):
                    opts.append((o, (p.help or "").split(". ")[0].rstrip("."), not p.is_flag))
        opts.append(("--help", "Show this message and exit", False))
        model.append((name, (cmd.help or "").split(". ")[0].split("\n")[0].rstrip("."), opts))
    return model


def _q(text: str, chars: str = "'") -> str:
    for c in chars:
        text = text.replace(c, "")
    return text


def completion_scripts(root) -> dict[str, str]:
    """Static bash, zsh and fish completion scripts generated from the click group `root` (no Python start-up on TAB)."""
    model = _completion_model(root)
    head = "# ed completion, generated from the app by `ed completions DIR`; do not edit\n"
    names = " ".join(n for n, _, _ in model)
    bash = [head, "_ed() {\n  local cur=${COMP_WORDS[COMP_CWORD]} opts\n",
            "  if [ \"$COMP_CWORD\" -eq 1 ]; then\n",
            f"    COMPREPLY=( $(compgen -W \"{names} --help --version\" -- \"$cur\") ); return\n  fi\n",
            "  case \"${COMP_WORDS[1]}\" in\n"]
    bash += [f"    {n}) opts=\"{' '.join(o for o, _, _ in opts)}\" ;;\n" for n, _, opts in model]
    bash += ["    *) opts=\"\" ;;\n  esac\n",
             "  if [[ \"$cur\" == -* ]]; then COMPREPLY=( $(compgen -W \"$opts\" -- \"$cur\") ); fi\n}\n",
             "complete -o default -F _ed ed\n"]
    zsh = [head.replace("# ed", "#compdef ed\n# ed", 1), "_ed() {\n  local -a commands\n  commands=(\n"]
    zsh += [f"    '{n}:{_q(h, chr(39) + ':')}'\n" for n, h, _ in model]
    zsh += ["  )\n  if (( CURRENT == 2 )); then\n    _describe 'command' commands\n    return\n  fi\n",
            "  case $words[2] in\n"]
    for n, _, opts in model:
        args = " \\\n        ".join(f"'{o}[{_q(h, chr(39) + '[]:')}]" + (":value:_files'" if v else "'") for o, h, v in opts)
        zsh.append(f"    {n})\n      _arguments -s \\\n        {args} \\\n        '*:file:_files' ;;\n")
    zsh += ["  esac\n}\n", "_ed \"$@\"\n"]
    fish = [head, "complete -c ed -f -n __fish_use_subcommand -l version -d 'Show the version and exit'\n"]
    for n, h, opts in model:
        fish.append(f"complete -c ed -f -n __fish_use_subcommand -a {n} -d '{_q(h)}'\n")
        for o, oh, v in opts:
            fish.append(f"complete -c ed -n '__fish_seen_subcommand_from {n}' -l {o[2:]} -d '{_q(oh)}'"
                        + (" -r\n" if v else "\n"))
    return {"ed.bash": "".join(bash), "ed.zsh": "".join(zsh), "ed.fish": "".join(fish)}
