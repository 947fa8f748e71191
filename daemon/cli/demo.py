"""``lifeguard demo``: the embedded stack on defaults, shown live in the terminal."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from daemon.cli import app


@app.command()
def demo(
    duration: Annotated[float, typer.Option(help="Seconds to run (0 = until Ctrl-C).")] = 0,
    rate: Annotated[float, typer.Option(help="Synthetic events per second.")] = 2000,
) -> None:
    """Start a local broker, a traffic generator and the daemon, and watch what it ingests."""
    import logging

    from rich.console import Console
    from rich.live import Live

    from daemon.app import Daemon
    from daemon.config import parse_config
    from daemon.dashboard import IngestView
    from daemon.traffic import TrafficGenerator

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    console = Console()
    config = parse_config({"api": {"port": 9464},
                           "models": [{"name": "sentiment"}, {"name": "support-bot"}]})
    daemon = Daemon(config)
    console.print("[bold]lifeguard demo[/]: embedded broker, synthetic traffic, the daemon.")
    daemon.start()
    assert daemon.broker is not None
    traffic = TrafficGenerator(daemon.broker.bootstrap, config.kafka.topics[0], rate,
                               [m.name for m in config.models]).start()
    view = IngestView(daemon.registry)
    assert daemon.http is not None
    console.print(f"metrics: {daemon.http.url}/metrics   health: {daemon.http.url}/healthz"
                  "   Ctrl-C to stop")
    started = time.monotonic()
    try:
        with Live(view.render(), console=console, refresh_per_second=2) as live:
            while not duration or time.monotonic() - started < duration:
                time.sleep(0.5)
                live.update(view.render())
    except KeyboardInterrupt:
        pass
    finally:
        traffic.stop()
        daemon.stop()
    console.print(f"sent {traffic.sent} valid and {traffic.sent_invalid} malformed events; "
                  f"stopped cleanly.")
