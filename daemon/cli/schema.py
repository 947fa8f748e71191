"""``lifeguard schema``: the JSON Schema of the config file, generated from the pydantic models
(editors validate and complete ``lifeguard.yaml`` with it; examples/ ships a copy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from daemon.cli import app


def config_schema() -> dict[str, Any]:
    from daemon.config import DaemonConfig

    schema = DaemonConfig.model_json_schema(mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "lifeguard configuration"
    return schema


def render_schema() -> str:
    return json.dumps(config_schema(), indent=2, sort_keys=True) + "\n"


@app.command()
def schema(
    out: Annotated[Path | None, typer.Option(help="Write here instead of stdout.")] = None,
) -> None:
    """Print (or write) the JSON Schema of the config file."""
    text = render_schema()
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text)
        typer.echo(f"wrote {out}")
