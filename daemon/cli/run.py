"""``lifeguard run`` and ``lifeguard check-config``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from daemon.cli import app

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

    raise typer.Exit(Daemon(_load(config)).run())


@app.command("check-config")
def check_config(config: Annotated[Path, typer.Argument(help="YAML config file.")]) -> None:
    """Validate a config file; exit 2 naming each bad key's path."""
    loaded = _load(config)
    names = ", ".join(m.name for m in loaded.models) or "none"
    typer.echo(f"{config}: ok ({len(loaded.models)} model(s): {names})")
