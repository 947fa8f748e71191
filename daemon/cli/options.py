"""Command-line options validated by a settings model: each bad value named by its flag."""

from __future__ import annotations

from typing import NoReturn

import typer
from pydantic import ValidationError


def exit_on_bad_options(exc: ValidationError) -> NoReturn:
    """Print ``--flag: why`` for every invalid option, then exit 2 (a usage error)."""
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        typer.secho(f"--{where.replace('_', '-')}: {error['msg']}", fg=typer.colors.RED,
                    err=True)
    raise typer.Exit(2) from None
