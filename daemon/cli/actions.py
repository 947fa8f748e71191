"""``lifeguard step``: run one action step (fine_tune, evaluate, export_onnx, quantize, prune) by
hand on local folders, as the runner would, and print its result as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from daemon.cli import app

# exit codes a script can act on: the step failed for good, or may succeed if run again later
EXIT_PERMANENT = 1
EXIT_RETRYABLE = 75  # EX_TEMPFAIL


def _settings(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    import yaml

    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise typer.BadParameter(f"{path}: expected a mapping")
    return raw


@app.command("step")
def step(
    name: Annotated[str, typer.Argument(help="fine_tune | evaluate | export_onnx | quantize | "
                                             "prune (deploy runs only in the daemon)")],
    model_dir: Annotated[Path, typer.Option(help="The step's input model folder.")],
    output_dir: Annotated[Path, typer.Option(help="Where content-addressed outputs go.")],
    snapshot: Annotated[Path | None, typer.Option(help="Labelled traffic, JSONL.")] = None,
    reference: Annotated[Path | None, typer.Option(help="Replay data, JSONL.")] = None,
    champion_dir: Annotated[Path | None, typer.Option(help="The model in production.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[int | None, typer.Option(help="Cores to use.")] = None,
    settings: Annotated[Path | None, typer.Option(
        help="YAML with `policy:` (ActionPolicy) and `train:` (TrainConfig) mappings.")] = None,
) -> None:
    """Run one action step and print its StepResult (or the failure) as JSON."""
    from actions.contract import StepContext
    from actions.errors import GateFailed, StepError, is_retryable
    from actions.progress import Progress
    from actions.steps import STEPS, run_step
    from lifeguard.errors import IntegrityError

    raw = _settings(settings)
    unknown = set(raw) - {"policy", "train"}
    if unknown:
        raise typer.BadParameter(f"{settings}: unknown keys {sorted(unknown)}")
    if name not in STEPS:
        raise typer.BadParameter(f"unknown step {name!r}; known: {', '.join(sorted(STEPS))}")

    def show(p: Progress) -> None:
        if p.current == p.total or p.current % 10 == 0:
            typer.echo(f"{p.step} {p.current}/{p.total} loss {p.loss:.4f}", err=True)

    try:
        ctx = StepContext.model_validate({
            "run_id": "manual", "step": name, "model_dir": model_dir, "output_dir": output_dir,
            "snapshot": snapshot, "reference": reference, "champion_dir": champion_dir,
            "device": device, "threads": threads, "policy": raw.get("policy", {}),
            "train": raw.get("train", {}), "progress": show,
        })
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    try:
        result = run_step(name, ctx)
    except GateFailed as exc:
        typer.echo(json.dumps({"step": name, "failed": "gate", "evidence": exc.evidence},
                              indent=2))
        raise typer.Exit(EXIT_PERMANENT) from None
    except (StepError, IntegrityError) as exc:
        typer.echo(json.dumps({"step": name, "failed": type(exc).__name__, "error": str(exc),
                               "retryable": is_retryable(exc)}, indent=2))
        raise typer.Exit(EXIT_RETRYABLE if is_retryable(exc) else EXIT_PERMANENT) from None
    typer.echo(json.dumps({"step": name, **result.to_json()}, indent=2, default=str))
