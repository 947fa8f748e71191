"""``lifeguard simulate``: drive replicas (or write events straight to Kafka) with a scenario,
late and partial labels, and a live view of what the models got right."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from daemon.cli import app


@app.command()
def simulate(
    scenario: Annotated[
        str, typer.Option(help="stationary | abrupt-shift | gradual-shift | latency-regression "
                               "| concept-drift")
    ] = "stationary",
    rate: Annotated[float, typer.Option(help="Requests per second.")] = 20.0,
    duration: Annotated[float, typer.Option(help="Seconds of traffic.")] = 60.0,
    shift_at: Annotated[
        float | None, typer.Option(help="T, seconds from the start (default: half-way).")
    ] = None,
    ramp: Annotated[float, typer.Option(help="gradual-shift: seconds from 0 to 100%.")] = 30.0,
    base_domain: Annotated[str, typer.Option(help="Domain before the shift.")] = "electronics",
    shift_domain: Annotated[str, typer.Option(help="Domain after the shift.")] = "restaurants",
    replica: Annotated[
        list[str] | None,
        typer.Option(help="Replica base URL (repeatable, round-robin): replica mode."),
    ] = None,
    kafka: Annotated[
        str | None,
        typer.Option(help="Kafka bootstrap HOST:PORT. Without --replica: events go straight "
                          "to Kafka (direct mode). With it: where the labels go."),
    ] = None,
    topic: Annotated[str, typer.Option(help="Topic for events and feedback.")] = "inference",
    model: Annotated[str, typer.Option(help="Model name (request path and message key).")] = (
        "sentiment"),
    label_delay: Annotated[float, typer.Option(help="Seconds before a label arrives.")] = 5.0,
    label_jitter: Annotated[float, typer.Option(help="Plus uniform [0, jitter) seconds.")] = 1.0,
    label_coverage: Annotated[
        float, typer.Option(help="Share of requests that ever get a label, 0..1.")
    ] = 0.8,
    noise: Annotated[float, typer.Option(help="Share of labels flipped by noise.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed: same seed, same traffic.")] = 0,
    run_tag: Annotated[
        str | None, typer.Option(help="Request id prefix (default: random per run).")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Replica mode: requests in flight.")] = 32,
    timeout: Annotated[float, typer.Option(help="Replica mode: request timeout, s.")] = 10.0,
    latency_ms: Annotated[float, typer.Option(help="Direct mode: median latency.")] = 40.0,
    latency_factor: Annotated[
        float, typer.Option(help="latency-regression: latency multiplier after T.")
    ] = 3.0,
    concept_word: Annotated[
        list[str] | None,
        typer.Option(help="concept-drift: a cue word whose meaning flips (repeatable)."),
    ] = None,
    model_accuracy: Annotated[
        float, typer.Option(help="Direct mode: synthetic accuracy on the base domain.")
    ] = 0.92,
    shifted_accuracy: Annotated[
        float, typer.Option(help="Direct mode: synthetic accuracy on other domains.")
    ] = 0.6,
    recover_at: Annotated[
        float | None,
        typer.Option(help="Direct mode: seconds at which a version 2 answers well again."),
    ] = None,
    bucket: Annotated[float, typer.Option(help="Timeline bucket, seconds.")] = 5.0,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the final stats here as JSON.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No live table; print the summary only.")] = False,
) -> None:
    """Send a scenario's traffic and its true labels (FeedbackEvents after the label delay),
    and show the ground-truth accuracy of the answers per phase and model version."""
    import signal

    from pydantic import ValidationError
    from rich.console import Console
    from rich.live import Live

    from simulator.drivers import DirectConfig, ReplicaConfig, SyntheticModel
    from simulator.errors import SimulatorError
    from simulator.runner import Simulator
    from simulator.scenarios import ScenarioConfig
    from simulator.view import snapshot_table

    console = Console()
    if not replica and not kafka:
        console.print("[red]give --replica URL (replica mode) or --kafka HOST:PORT (direct)[/]")
        raise typer.Exit(2)
    try:
        config = ScenarioConfig(
            kind=scenario, rate=rate, duration_s=duration,  # type: ignore[arg-type]
            shift_at_s=duration / 2 if shift_at is None else shift_at, ramp_s=ramp,
            base_domain=base_domain, shift_domain=shift_domain, noise=noise,
            label_delay_s=label_delay, label_jitter_s=label_jitter,
            label_coverage=label_coverage, latency_ms=latency_ms, latency_factor=latency_factor,
            concept_words=tuple(concept_word) if concept_word else None, model=model,
            seed=seed, run_tag=run_tag)
        driver: DirectConfig | ReplicaConfig
        if replica:
            driver = ReplicaConfig(urls=replica, kafka=kafka, topic=topic,
                                   concurrency=concurrency, timeout_s=timeout)
        else:
            assert kafka is not None
            synthetic = SyntheticModel(accuracy={base_domain: model_accuracy},
                                       default_accuracy=shifted_accuracy,
                                       recover_at_s=recover_at)
            driver = DirectConfig(kafka=kafka, topic=topic, model=synthetic)
        simulator = Simulator(config, driver, bucket_s=bucket)
    except (ValidationError, SimulatorError, ValueError) as exc:
        console.print(f"[red]bad settings:[/] {exc}")
        raise typer.Exit(2) from None

    mode = f"replica mode, {len(replica)} replica(s)" if replica else "direct mode"
    console.print(f"[bold]simulate[/] {scenario}: {rate:g} req/s for {duration:g} s, {mode}, "
                  f"labels after {label_delay:g}+U[0,{label_jitter:g}) s for "
                  f"{label_coverage:.0%}; run tag {simulator.scenario.run_tag}")
    if replica and not kafka:
        console.print("[yellow]no --kafka: labels are not sent (accuracy is still counted)[/]")
    # SIGTERM (a supervisor stopping us) ends the run like Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    simulator.start()
    try:
        if quiet:
            while not simulator.wait(0.5):
                pass
        else:
            with Live(snapshot_table(simulator.snapshot()), console=console,
                      refresh_per_second=2) as live:
                while not simulator.wait(0.5):
                    live.update(snapshot_table(simulator.snapshot()))
    except KeyboardInterrupt:
        console.print("stopping: requests in flight finish, waiting labels are abandoned "
                      "(Ctrl-C again to quit at once)")
        simulator.stop()
    final = simulator.snapshot()
    console.print(snapshot_table(final, title="simulator: final"))
    if json_out is not None:
        json_out.write_text(json.dumps(final.to_dict(), indent=2, default=str))
        console.print(f"stats written to {json_out}")
    if simulator.error is not None:
        console.print(f"[red]{simulator.error}[/]")
        raise typer.Exit(1)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt
