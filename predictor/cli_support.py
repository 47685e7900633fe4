"""What every dnnsplit command shares: app construction, one-line user errors, JSON output.

Only typer and the standard library are imported here, so ``--help`` stays instant.
"""

from __future__ import annotations

import functools
import json
import re
import sys
from typing import Any, Callable

import typer

from dnnsplit.predictor.errors import DnnsplitError


class _Command(typer.core.TyperCommand):
    """A command whose usage line and help name every value the classic way: ``MODEL`` for a
    required argument, ``[NAMES]...`` for optional ones, ``--out OUT`` for an option without a
    metavar of its own (rather than ``{model}`` and ``--out <str>``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.metavar is None and not getattr(param, "is_flag", False) and param.name:
                param.metavar = param.name.upper()

    def format_options(self, ctx, formatter) -> None:
        """The help's rows without typer's ``<str>`` / ``<list[str]>`` after a named value."""
        write_dl = formatter.write_dl

        def without_types(rows, *args, **kwargs):
            rows = [(re.sub(r" <[^<>]*>$", "", first), *rest) for first, *rest in rows]
            return write_dl(rows, *args, **kwargs)

        formatter.write_dl = without_types
        try:
            super().format_options(ctx, formatter)
        finally:
            formatter.write_dl = write_dl

    def collect_usage_pieces(self, ctx) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name != "argument":
                continue
            name = param.metavar or param.name.upper()
            name = name if param.required else f"[{name.strip('[]')}]"
            pieces.append(name + ("..." if param.nargs != 1 else ""))
        return pieces


class _App(typer.Typer):
    def command(self, *args, **kwargs):
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


def new_app(help_text: str) -> typer.Typer:
    """A Typer app configured the same way for every dnnsplit command."""
    return _App(
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )


def user_errors(command: Callable) -> Callable:
    """Print a :class:`DnnsplitError` as one ``error: ...`` line and exit with status 2
    (or the error's own ``exit_code``); Ctrl-C exits with 130, without a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DnnsplitError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(getattr(exc, "exit_code", 2)) from None
        except KeyboardInterrupt:
            typer.echo("error: interrupted (Ctrl-C)", err=True)
            raise typer.Exit(130) from None

    return wrapper


def run_app(app: typer.Typer, args: list[str] | None = None) -> None:
    """Run a command line app; a mistake on the command line itself (a missing option, a
    value of the wrong type, an unknown command) ends in one ``error: ...`` line naming the
    command's ``--help``, with exit status 2, like a mistake found by the command."""
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, standalone_mode=False)
    except typer.Abort:
        typer.echo("error: interrupted (Ctrl-C)", err=True)
        sys.exit(130)
    except Exception as exc:
        # click's (or typer's own copy of click's) usage errors: a message and an exit code
        if not (hasattr(exc, "format_message") and hasattr(exc, "exit_code")):
            raise
        if type(exc).__name__ == "NoArgsIsHelpError":  # the bare command: its help
            typer.echo(exc.format_message())
            sys.exit(exc.exit_code)
        context = getattr(exc, "ctx", None)
        hint = f" (see `{context.command_path} --help`)" if context is not None else ""
        typer.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def echo_json(payload: Any) -> None:
    """Print ``payload`` as indented JSON on stdout."""
    json.dump(payload, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """'224,224,3' -> (224, 224, 3); None stays None."""
    if text is None:
        return None
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise DnnsplitError(f"input shape {text!r} is not a list of integers like 224,224,3")
    if not shape or any(d <= 0 for d in shape):
        raise DnnsplitError(f"input shape {text!r} must be positive integers like 224,224,3")
    return shape
