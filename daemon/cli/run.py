"""``lifeguard run`` and ``lifeguard check-config``."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from daemon.cli import app

if TYPE_CHECKING:
    from daemon.config import DaemonConfig

ConfigPath = Annotated[Path, typer.Option("--config", "-c", help="YAML config file.")]


def _load(config: Path):  # type: ignore[no-untyped-def]
    from daemon.config import ConfigError, load_config

    try:
        loaded = load_config(config)
        # Tokens may come from the environment: a short one there is as wrong as in the file.
        loaded.api.resolved_token()
        loaded.api.resolved_webhook_token()
        return loaded
    except ConfigError as exc:
        typer.secho(f"invalid config: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


@app.command()
def run(
    config: ConfigPath,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ERROR.")] = "INFO",
) -> None:
    """Run the daemon until SIGTERM or Ctrl-C."""
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)
    from daemon.app import Daemon

    code = Daemon(_load(config)).run()
    # Everything durable is committed and closed by now. The interpreter's own teardown can
    # still stall for seconds behind a daemon thread in the middle of a heavy import (the
    # evaluator's evidently warm-up, on a loaded host), and SIGTERM promises a prompt exit.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@app.command("check-config")
def check_config(
    config: Annotated[Path, typer.Argument(help="YAML config file.")],
    probe: Annotated[bool, typer.Option(
        "--probe", help="Also connect to each broker and topic, each replica, the repository "
        "and the state store; exit 1 if any of them fails.")] = False,
) -> None:
    """Validate a config file; exit 2 naming each bad key's path."""
    loaded = _load(config)
    names = ", ".join(m.name for m in loaded.models) or "none"
    typer.echo(f"{config}: ok ({len(loaded.models)} model(s): {names})")
    if probe:
        _probe(loaded)


@app.command()
def doctor(config: Annotated[Path, typer.Argument(help="YAML config file.")]) -> None:
    """Same as ``check-config --probe``: is everything the config names reachable and usable?"""
    check_config(config, probe=True)


def _probe(config: DaemonConfig) -> None:
    import logging

    from daemon.probes import probe_all

    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # the FAIL line says why, once
    checks = probe_all(config)
    for check in checks:
        typer.echo(check.line())
    failed = sum(not c.ok for c in checks)
    typer.echo(f"{len(checks) - failed}/{len(checks)} checks passed")
    if failed:
        raise typer.Exit(1)
