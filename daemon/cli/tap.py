"""``lifeguard tap``: put an OpenAI-compatible fleet's traffic on Kafka as InferenceEvents."""

from __future__ import annotations

from typing import Annotated

import typer

from daemon.cli import app


@app.command()
def tap(
    upstream: Annotated[
        str, typer.Option(help="Base URL of the OpenAI-compatible server (vLLM, TGI, "
                               "llama.cpp, Triton's OpenAI frontend, a lifeguard replica).")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 8080,
    kafka: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap servers for events; unset: relay only."),
    ] = None,
    topic: Annotated[str, typer.Option(help="Kafka topic for events.")] = "inference",
    model_version: Annotated[
        str | None,
        typer.Option(help="Version written in events when the upstream sends no "
                          "x-model-version header (default: unknown)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Replica name in events (default: upstream host:port).")
    ] = None,
    content: Annotated[
        str, typer.Option(help="Messages and answers in events: full, truncate (to "
                               "--max-content-chars) or drop.")
    ] = "full",
    max_content_chars: Annotated[
        int, typer.Option(help="Characters kept per text with --content truncate.")
    ] = 2000,
    buffer: Annotated[
        int, typer.Option(help="Events held while Kafka is slow; beyond it they are dropped "
                               "and counted (lifeguard_tap_events_lost_total).")
    ] = 10_000,
    kafka_timeout_s: Annotated[
        float, typer.Option(help="An event Kafka has not taken after this long is lost.")
    ] = 30.0,
    stream_usage: Annotated[
        bool, typer.Option(help="Ask the upstream for token usage on streams "
                                "(stream_options.include_usage).")
    ] = True,
    timeout_s: Annotated[float, typer.Option(help="Upstream read timeout.")] = 600.0,
) -> None:
    """Relay /v1/chat/completions and /v1/completions (streamed or not) to the upstream
    unchanged, write one InferenceEvent per request to Kafka, and turn POST /v1/feedback into
    FeedbackEvents. Kafka being slow or down never slows or fails a request."""
    from pydantic import ValidationError

    from daemon.cli.options import exit_on_bad_options
    from deploy.tap import TapSettings, serve

    try:
        settings = TapSettings.model_validate(dict(
            upstream=upstream, host=host, port=port, kafka=kafka, topic=topic,
            model_version=model_version, name=name, content=content,
            max_content_chars=max_content_chars, buffer=buffer, kafka_timeout_s=kafka_timeout_s,
            stream_usage=stream_usage, timeout_s=timeout_s))
    except ValidationError as exc:
        exit_on_bad_options(exc)
    serve(settings)
