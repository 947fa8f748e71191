"""Quick pipeline steps for runner tests: each records its starts and its one effect in files
beside the run, so a test can see exactly what ran, when, and how often an effect applied."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from actions.contract import StepContext, StepResult, StepStatus
from actions.errors import GateFailed, PermanentStepError, RetryableStepError
from actions.progress import Progress, report


def _append(path: Path, line: str) -> None:
    # O_APPEND writes of one short line are atomic, even across processes.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def record(ctx: StepContext) -> StepResult:
    """Log a start; apply the effect once (idempotent); hold on the first start if asked.

    params: log (file), hold (before | after | none: when to sleep on the first start),
    hold_s, retry_times (raise RetryableStepError on the first N starts), fail (permanent),
    gate_fail, rolled_back.
    """
    p = ctx.params
    log = Path(p["log"])
    tag = f"{ctx.run_id} {ctx.step_index}"
    _append(log, f"start {tag} pid={os.getpid()} t={time.time():.3f}")
    starts = sum(1 for line in _lines(log) if line.startswith(f"start {tag} "))
    missing = [f"out{i}" for i in range(ctx.step_index) if f"out{i}" not in ctx.artifacts]
    if missing:
        raise PermanentStepError(f"artifacts of earlier steps missing: {missing}")
    if starts <= int(p.get("retry_times", 0)):
        raise RetryableStepError("not yet", {"start": starts}, delay_s=0.05)
    if p.get("fail"):
        raise PermanentStepError("configured to fail", {"why": "test"})
    if p.get("gate_fail"):
        raise GateFailed("candidate lost", {"candidate": 0.5, "champion": 0.9})
    hold = p.get("hold", "none") if starts == 1 else "none"
    if hold == "before":
        _append(log, f"holding {tag} pid={os.getpid()}")
        time.sleep(float(p.get("hold_s", 60)))
    effects = log.with_name("effects.log")
    if f"effect {tag}" not in _lines(effects):  # idempotent: the effect applies once
        _append(effects, f"effect {tag}")
    if hold == "after":
        _append(log, f"holding {tag} pid={os.getpid()}")
        time.sleep(float(p.get("hold_s", 60)))
    out = ctx.step_dir / "out.txt"
    out.write_text(f"{tag}\n")
    report(ctx, Progress(ctx.run_id, ctx.step, 3, 3, loss=0.25))  # as a training step would
    _append(log, f"end {tag} t={time.time():.3f}")
    status = StepStatus.ROLLED_BACK if p.get("rolled_back") else StepStatus.OK
    evidence = {"starts": starts, "snapshot": str(ctx.snapshot),
                "champion": str(ctx.champion_dir), "params": dict(p)}
    return StepResult.of({f"out{ctx.step_index}": out}, evidence, status)


def crash(ctx: StepContext) -> StepResult:
    """Die without a result, as an OOM-killed worker would."""
    print("CUDA out of memory (simulated)", flush=True)
    os._exit(3)


def hang(ctx: StepContext) -> StepResult:
    if "log" in ctx.params:
        _append(Path(ctx.params["log"]), f"hanging pid={os.getpid()}")
    time.sleep(600)
    raise AssertionError("unreachable")


def inspect(ctx: StepContext) -> StepResult:
    """Evidence of what the worker was given: its spec file's mode, the settings in it, and
    any lifeguard variable in its environment (there should be none)."""
    deploy = ctx.deploy
    token = deploy.token.get_secret_value() if deploy and deploy.token else None
    evidence = {
        "spec_mode": oct(os.stat(sys.argv[1]).st_mode & 0o777),
        "lifeguard_env": sorted(k for k in os.environ if k.startswith("LIFEGUARD_")),
        "threads": ctx.threads, "device": ctx.device, "output_dir": str(ctx.output_dir),
        "api_url": deploy.api_url if deploy else None,
        "token_matches": token == ctx.params.get("expect_token"),
        "model": ctx.model, "step": ctx.step, "attempt": ctx.attempt,
        "step_dir": str(ctx.step_dir),
    }
    return StepResult.of({}, evidence)
