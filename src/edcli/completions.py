"""Static bash, zsh and fish completion scripts, generated from the click command the CLI hands over.

They complete commands, long and short options, and option values: the choices of a choice option (datasets,
precisions, ...), the forms a metavar like `auto|cpu|cuda|cuda:N|mps` lists, folders for DIR and files for FILE.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class _Opt:
    longs: list[str]
    shorts: list[str]
    help: str
    takes_value: bool
    values: list[str] = field(default_factory=list)  # fixed values to offer
    kind: str = ""  # "dir", "file" or "" (a free value: nothing to offer)


def _values(p) -> tuple[list[str], str]:
    desc = getattr(p, "type_descriptor", None)
    if desc is not None and desc.is_choice and desc.choices:
        return [str(getattr(c, "value", c)) for c in desc.choices], ""
    meta = p.metavar or ""
    if "|" in meta and " " not in meta:  # e.g. auto|cpu|cuda|cuda:N|mps: its placeholder-free forms
        return [v for v in meta.split("|") if v == v.lower()], ""
    if desc is not None and desc.is_path:
        return [], "dir" if meta == "DIR" else "file"
    return [], ""


def _first_sentence(text: str) -> str:
    return (text or "").split(". ")[0].split("\n")[0].rstrip(".")


def _completion_model(root) -> list[tuple[str, str, list[_Opt]]]:
    """(command, help, options) for every visible command of the click group `root`."""
    model = []
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        if cmd.hidden:
            continue
        opts = []
        for p in cmd.params:
            if p.param_type_name != "option":
                continue
            names = [*p.opts, *p.secondary_opts]
            flag = bool(getattr(p, "is_flag", False))
            values, kind = ([], "") if flag else _values(p)
            opts.append(
                _Opt(
                    [o for o in names if o.startswith("--")],
                    [o for o in names if not o.startswith("--")],
                    _first_sentence(p.help),
                    not flag,
                    values,
                    kind,
                )
            )
        opts.append(_Opt(["--help"], ["-h"], "Show this message and exit", False))
        model.append((name, _first_sentence(cmd.help), opts))
    return model


def _zsh(text: str) -> str:
    """A description inside a single-quoted zsh _arguments/_describe spec: kept whole, specials escaped."""
    for c in "\\[]:$`":
        text = text.replace(c, "\\" + c)
    return text.replace("'", "'\\''")


def _fish(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def _bash(model, head: str) -> str:
    names = " ".join(n for n, _, _ in model)
    out = [
        head,
        "_ed() {\n  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} opts\n",
        '  if [ "$COMP_CWORD" -eq 1 ]; then\n',
        f'    COMPREPLY=( $(compgen -W "{names} --help --version" -- "$cur") ); return\n  fi\n',
        '  case "${COMP_WORDS[1]}" in\n',
    ]
    for n, _, opts in model:
        words = " ".join(o for opt in opts for o in [*opt.longs, *opt.shorts])
        out.append(f'    {n})\n      opts="{words}"\n      case "$prev" in\n')
        for opt in (o for o in opts if o.takes_value):
            pattern = "|".join([*opt.longs, *opt.shorts])
            if opt.values:
                action = f'COMPREPLY=( $(compgen -W "{" ".join(opt.values)}" -- "$cur") ); return'
            elif opt.kind == "dir":
                action = 'COMPREPLY=( $(compgen -d -- "$cur") ); return'
            else:  # a file, or a free value: the shell's file names (complete -o default)
                action = "return"
            out.append(f"        {pattern}) {action} ;;\n")
        out.append("      esac ;;\n")
    out += [
        '    *) opts="" ;;\n  esac\n',
        '  if [[ "$cur" == -* ]]; then COMPREPLY=( $(compgen -W "$opts" -- "$cur") ); fi\n}\n',
        "complete -o default -F _ed ed\n",
    ]
    return "".join(out)


def _zsh_script(model, head: str) -> str:
    out = [head.replace("# ed", "#compdef ed\n# ed", 1), "_ed() {\n  local -a commands\n  commands=(\n"]
    out += [f"    '{n}:{_zsh(h)}'\n" for n, h, _ in model]
    out += [
        "  )\n  if (( CURRENT == 2 )); then\n    _describe 'command' commands\n    return\n  fi\n",
        "  case $words[2] in\n",
    ]
    for n, _, opts in model:
        specs = []
        for opt in opts:
            names = [*opt.shorts, *opt.longs]
            value = ""
            if opt.takes_value:
                label = opt.longs[0][2:]
                value = (
                    f":{label}:({' '.join(opt.values)})"
                    if opt.values
                    else f":{label}:_files -/"
                    if opt.kind == "dir"
                    else f":{label}:_files"
                    if opt.kind == "file"
                    else f":{label}: "
                )
            exclusive = f"({' '.join(names)})" if len(names) > 1 else ""
            for o in names:
                specs.append(f"'{exclusive}{o}[{_zsh(opt.help)}]{value}'")
        args = " \\\n        ".join(specs)
        out.append(f"    {n})\n      _arguments -s \\\n        {args} \\\n        '*:file:_files' ;;\n")
    out += ["  esac\n}\n", '_ed "$@"\n']
    return "".join(out)


def _fish_script(model, head: str) -> str:
    out = [head, "complete -c ed -f -n __fish_use_subcommand -l version -d 'Show the version and exit'\n"]
    for n, h, opts in model:
        out.append(f"complete -c ed -f -n __fish_use_subcommand -a {n} -d '{_fish(h)}'\n")
        for opt in opts:
            line = f"complete -c ed -n '__fish_seen_subcommand_from {n}'"
            line += "".join(f" -l {o[2:]}" for o in opt.longs) + "".join(f" -s {o[1:]}" for o in opt.shorts)
            line += f" -d '{_fish(opt.help)}'"
            if opt.values:
                line += f" -x -a '{' '.join(opt.values)}'"
            elif opt.kind == "dir":
                line += " -x -a '(__fish_complete_directories)'"
            elif opt.kind == "file":
                line += " -r -F"
            elif opt.takes_value:
                line += " -x"
            out.append(line + "\n")
    return "".join(out)


def completion_scripts(root) -> dict[str, str]:
    """Static bash, zsh and fish completion scripts generated from the click group `root` (no Python start-up on
    TAB)."""
    model = _completion_model(root)
    head = "# ed completion, generated from the app by `ed completions DIR`; do not edit\n"
    return {"ed.bash": _bash(model, head), "ed.zsh": _zsh_script(model, head), "ed.fish": _fish_script(model, head)}
