"""``kzprobe completion bash|zsh``: a completion script made from the argument parser.

Generated, so it cannot drift from the options; plain bash (``compgen``), no dependency and
nothing run at completion time. zsh loads the same function through ``bashcompinit``.
"""

from __future__ import annotations

import argparse
import shlex

SHELLS = ("bash", "zsh")

_FUNCTION = """\
_kzprobe() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} cmd="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        case " {commands} " in *" ${{COMP_WORDS[i]}} "*) cmd=${{COMP_WORDS[i]}}; break;; esac
    done
    local choices=""
    case "$cmd $prev" in
{choices}
    esac
    if [[ -n $choices ]]; then
        COMPREPLY=($(compgen -W "$choices" -- "$cur"))
        return
    fi
    case $cmd in
{options}
    esac
}}
complete -o default -F _kzprobe kzprobe
"""


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    return [flag for action in parser._actions for flag in action.option_strings
            if flag.startswith("--") or flag == "-h"]


def _choice_cases(name: str, parser: argparse.ArgumentParser) -> list[str]:
    """``"cmd --opt") choices="a b";;`` for each option with fixed choices."""
    cases = []
    for action in parser._actions:
        if action.choices and action.option_strings and action.nargs is None:
            words = " ".join(str(c) for c in action.choices)
            for flag in action.option_strings:
                cases.append(f'        "{name} {flag}") choices={shlex.quote(words)};;')
    return cases


def _command_case(name: str, sub: argparse.ArgumentParser) -> str:
    """Options; a positional's fixed choices; else (files, URLs) bash's default completion."""
    positionals = [a for a in sub._actions if not a.option_strings]
    fixed = [str(c) for a in positionals if a.choices for c in a.choices]
    words = shlex.quote(" ".join([*fixed, *_flags(sub)]))
    if positionals and not fixed:  # -o default completes file names
        return (f'        {name}) if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W '
                f'{words} -- "$cur")); fi;;')
    return f'        {name}) COMPREPLY=($(compgen -W {words} -- "$cur"));;'


def bash_script(parser: argparse.ArgumentParser) -> str:
    """The bash completion function for ``parser``'s commands, options and choices."""
    commands = _subcommands(parser)
    choices = _choice_cases("", parser)
    options = [f'        "") COMPREPLY=($(compgen -W '
               f'{shlex.quote(" ".join([*commands, *_flags(parser)]))} -- "$cur"));;']
    for name, sub in commands.items():
        choices += _choice_cases(name, sub)
        options.append(_command_case(name, sub))
    return _FUNCTION.format(commands=" ".join(commands), choices="\n".join(choices),
                            options="\n".join(options))


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell`` (one of :data:`SHELLS`)."""
    text = bash_script(parser)
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + text
    return text
