"""``lifeguard replica``: run the reference serving replica (Open Inference Protocol v2)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from daemon.cli import app


@app.command()
def replica(
    repository: Annotated[
        Path, typer.Option(help="Model repository in Triton's layout (<repo>/<model>/<n>/).")
    ],
    model: Annotated[
        list[str] | None,
        typer.Option(help="Model to load at start, NAME or NAME:VERSION (default: latest "
                          "version); repeatable. Others load via the repository API."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
    name: Annotated[
        str | None, typer.Option(help="Replica name written in events (default HOST:PORT).")
    ] = None,
    kafka: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap servers for inference events; unset: no events."),
    ] = None,
    topic: Annotated[str, typer.Option(help="Kafka topic for inference events.")] = "inference",
    sample_rate: Annotated[
        float, typer.Option(help="Share of requests logged to Kafka, 0..1 (by request id).")
    ] = 1.0,
    device: Annotated[
        str, typer.Option(help="auto (CUDA when really usable), cpu or cuda.")
    ] = "auto",
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads per session.")] = 1,
    workers: Annotated[
        int, typer.Option(help="Inference threads running batches concurrently.")
    ] = 1,
    max_batch: Annotated[int, typer.Option(help="Most requests in one micro-batch.")] = 16,
    batch_wait_ms: Annotated[
        float,
        typer.Option(help="How long a lone request waits for company (0: batch only what "
                          "already queues)."),
    ] = 0.0,
    max_queue: Annotated[
        int, typer.Option(help="Requests waiting for a batch, per model; past it 503 with "
                               "Retry-After.")
    ] = 1024,
) -> None:
    """Serve models from a repository over HTTP: OIP v2 health/metadata/infer, the repository
    extension (index/load/unload), POST /v2/models/NAME/text for raw text, and one
    InferenceEvent per request to Kafka."""
    from pydantic import ValidationError

    from daemon.cli.options import exit_on_bad_options
    from deploy.fleet import REPLICA_TOKEN_ENV
    from deploy.replica import ReplicaSettings, serve

    try:
        settings = ReplicaSettings.model_validate(dict(
            repository=repository, models=model or [], host=host, port=port, name=name,
            kafka=kafka, topic=topic, sample_rate=sample_rate, device=device, threads=threads,
            workers=workers, max_batch=max_batch, batch_wait_ms=batch_wait_ms,
            max_queue=max_queue,
            # The repository API's token comes from the environment, never the command line.
            control_token=os.environ.get(REPLICA_TOKEN_ENV) or None))
    except ValidationError as exc:
        exit_on_bad_options(exc)
    serve(settings)
