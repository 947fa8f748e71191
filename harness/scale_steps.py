"""A pipeline step for the scale-out bench: on its first start it holds (so the bench can kill
its instance mid-run), and it applies its effect once, recorded in a log beside the run."""

from __future__ import annotations

import os
import time
from pathlib import Path

from actions.contract import StepContext, StepResult


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # one atomic line
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def hold_once(ctx: StepContext) -> StepResult:
    """params: log (file), hold_s (how long the first start of this step holds; 0: never)."""
    log = Path(ctx.params["log"])
    tag = f"{ctx.run_id} {ctx.step}"
    lines = log.read_text().splitlines() if log.exists() else []
    first = not any(line.startswith(f"start {tag} ") for line in lines)
    _append(log, f"start {tag} pid={os.getpid()}")
    if first and float(ctx.params.get("hold_s", 0)):
        _append(log, f"holding {tag}")
        time.sleep(float(ctx.params["hold_s"]))
    if f"effect {tag}" not in lines:  # idempotent: a re-run step applies nothing twice
        _append(log, f"effect {tag}")
    out = ctx.step_dir / "out.txt"
    out.write_text(tag + "\n")
    return StepResult.of({f"out-{ctx.step}": out}, {"first": first})
