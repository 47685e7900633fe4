"""What every dnnsplit command shares: app construction, one-line user errors, JSON output.

Only typer and the standard library are imported here, so ``--help`` stays instant.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import typer

from dnnsplit.predictor.errors import DnnsplitError


def new_app(help_text: str) -> typer.Typer:
    """A Typer app configured the same way for every dnnsplit command."""
    return typer.Typer(
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
