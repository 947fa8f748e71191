"""``lifeguard broker``: run the embedded Kafka-protocol broker in the foreground."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from daemon.cli import app


@app.command()
def broker(
    port: Annotated[int, typer.Option(help="Loopback port (0 picks a free one).")] = 9092,
    topic: Annotated[
        list[str] | None, typer.Option(help="Topic to create, NAME or NAME:PARTITIONS; repeatable.")
    ] = None,
) -> None:
    """Run a local tansu broker (memory storage) until Ctrl-C."""
    from daemon.ingest.broker import LocalBroker, ensure_topics

    wanted: dict[str, int] = {}
    for spec in topic or ["inference:3"]:
        name, _, partitions = spec.partition(":")
        wanted[name] = int(partitions or 1)
    local = LocalBroker(port=port or None).start()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        ensure_topics(local.bootstrap, wanted)
        typer.echo(f"broker listening on {local.bootstrap}; topics: {', '.join(wanted)}")
        stop.wait()
    finally:
        local.stop()
