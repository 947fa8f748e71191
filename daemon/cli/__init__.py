"""The ``lifeguard`` command. Each sub-module registers its commands; heavy imports stay inside
the commands so that ``lifeguard --help`` is instant."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="lifeguard",
    help="Keep language models healthy in production: detect, retrain, gate, roll out, roll back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



@app.callback()
def _root() -> None:
    """lifeguard: the loop from inference logs to a healthier model in production."""


# Registration side effects: each module adds its commands to ``app``.
from daemon.cli import actions as _actions  # noqa: E402,F401
from daemon.cli import broker as _broker  # noqa: E402,F401
from daemon.cli import demo as _demo  # noqa: E402,F401
from daemon.cli import oncall as _oncall  # noqa: E402,F401
from daemon.cli import replica as _replica  # noqa: E402,F401
from daemon.cli import run as _run  # noqa: E402,F401
from daemon.cli import schema as _schema  # noqa: E402,F401
from daemon.cli import simulate as _simulate  # noqa: E402,F401
from daemon.cli import tap as _tap  # noqa: E402,F401


def main() -> None:
    app()
