"""Command-line conventions shared by every ``calipers`` command.

:class:`CalipersGroup` is the app's command group (``typer.Typer(cls=CalipersGroup)``):

- ``-h`` as well as ``--help``; ``--version`` / ``-V`` (added in ``main.py``).
- Readable help: boolean flags show no value placeholder; other options show ``INTEGER``,
  ``NUMBER``, ``PATH``, ``TEXT`` or their choices instead of Python types (``<list[Path]>``);
  arguments appear by their upper-case name (``RUN_DIRS...``).
- One error style for every command: ``error: <message>`` on stderr, after the usage line and
  a pointer to ``-h``, exit code 2 (:func:`print_error` for errors raised by the commands).

# NOTE [Typer help display]
Typer 0.29 prints Python types (``<int>``, ``<list[Path]>``, ``<bool>`` after every flag) and
wraps required arguments in braces on the usage line. We set each parameter's public
``metavar`` instead, and replace two display hooks on the argument instances (the rich type
column and the usage name); if a later typer drops those hooks, the help falls back to typer's
own display and ``tests/test_cli_conventions.py`` says so.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperArgument, TyperGroup, TyperOption

__all__ = ["CONTEXT_SETTINGS", "CalipersGroup", "print_error"]

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}
_TYPES = {"int": "INTEGER", "float": "NUMBER", "str": "TEXT", "path": "PATH", "bool": "BOOLEAN"}


def print_error(message: str) -> None:
    """Print ``error: message`` on stderr, the one error style of every command."""
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(str(message))}",
                                               highlight=False)


def _readable_type(param: TyperOption | TyperArgument) -> str | None:
    """``INTEGER``, ``PATH``, ``a|b|c``... for a Python-typed option (None: leave it)."""
    try:
        label = param.display_type(None)  # e.g. "<int>", "<list[Path]>", "<a|b>"
    except Exception:  # a new typer: keep its own display
        return None
    if not isinstance(label, str):
        return None
    label = label.strip("<>")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]
    if "|" in label:
        return label
    return _TYPES.get(label.lower(), label.upper())


def _make_readable(command: Any) -> None:
    """Give the parameters of ``command`` (and of its sub-commands) readable metavars."""
    for sub in getattr(command, "commands", {}).values():
        _make_readable(sub)
    for param in getattr(command, "params", []):
        if isinstance(param, TyperOption):
            if param.is_flag:
                param.metavar = ""
            elif param.metavar is None:
                param.metavar = _readable_type(param)
        elif isinstance(param, TyperArgument) and param.metavar is None:
            many = param.nargs != 1
            param.metavar = param.name.upper() + ("..." if many else "")
            param.display_type_rich = lambda ctx: None  # the metavar says it all
            # usage line: RUN_DIRS... (required) or [OUT] (optional), not typer's {RUN_DIRS}
            param._usage_display_name = (  # see NOTE [Typer help display]
                lambda p=param: p.metavar if p.required else f"[{p.metavar}]")
    help_option = getattr(command, "get_help_option", None)
    if help_option is not None and not getattr(help_option, "_calipers", False):
        def get_help_option(ctx: Any, _orig: Any = help_option) -> Any:
            opt = _orig(ctx)
            if opt is not None:
                opt.metavar = ""  # a flag: no <bool>
            return opt

        get_help_option._calipers = True  # type: ignore[attr-defined]
        command.get_help_option = get_help_option


class CalipersGroup(TyperGroup):
    """The ``calipers`` command group: readable help and one error style (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _make_readable(self)

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: Any = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.exceptions.TyperException as exc:  # click's usage errors derive from it
            code = getattr(exc, "exit_code", 2)
            if type(exc).__name__ != "NoArgsIsHelpError":  # help was printed: nothing to add
                _usage_error(exc)
            sys.exit(code)
        except typer.Abort:
            Console(stderr=True).print("Aborted.")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


def _usage_error(exc: Exception) -> None:
    err = Console(stderr=True, soft_wrap=True)
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        err.print(escape(ctx.get_usage()), highlight=False)
        err.print(f"Try '{escape(ctx.command_path)} -h' for help.", highlight=False)
    message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
    print_error(message)
