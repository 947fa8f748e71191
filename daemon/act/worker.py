"""The step worker: ``python -m daemon.act.worker SPEC.json`` runs one step in a fresh process, so
torch and friends load here and never in the daemon. It writes its result file atomically.

The result says ok (with the outcome), or which kind of failure: ``permanent`` or
``retryable`` (from the step's exception tree in actions.step_api). An unexpected exception is
permanent: a bug does not fix itself on retry, and retries of training steps cost hours.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from actions.step_api import (
    PermanentStepError,
    RetryableStepError,
    StepInputs,
    StepOutcome,
    content_sha256,
)
from lifeguard.processes import die_with_parent


def die_with_daemon(parent_pid: int) -> None:
    """If the daemon is killed (even -9), this worker must not live on and act twice."""
    die_with_parent(signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def resolve(ref: str) -> Callable[[StepInputs], StepOutcome]:
    """``module:function``, or a bare name looked up in ``actions.steps.STEPS``."""
    if ":" in ref:
        module, _, attr = ref.partition(":")
        fn = getattr(importlib.import_module(module), attr, None)
    else:
        steps = importlib.import_module("actions.steps")
        fn = getattr(steps, "STEPS", {}).get(ref)
    if not callable(fn):
        raise PermanentStepError(f"unknown step {ref!r}")
    return fn


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    raw = spec["inputs"]
    inputs = StepInputs(
        run_id=raw["run_id"], model=raw["model"], step_index=raw["step_index"],
        step_name=raw["step_name"], work_dir=Path(raw["work_dir"]), params=raw["params"],
        artifacts={k: Path(v) for k, v in raw["artifacts"].items()},
        snapshot_path=Path(raw["snapshot_path"]) if raw["snapshot_path"] else None,
        champion_path=Path(raw["champion_path"]) if raw["champion_path"] else None,
        attempt=raw["attempt"],
    )
    try:
        for name, expected in spec["verify"].items():
            actual = content_sha256(inputs.artifacts[name])
            if actual != expected:
                raise PermanentStepError(
                    f"artifact {name!r} changed since it was produced",
                    {"artifact": name, "expected": expected, "actual": actual},
                )
        inputs.step_dir.mkdir(parents=True, exist_ok=True)
        outcome = resolve(spec["ref"])(inputs)
        if not isinstance(outcome, StepOutcome):
            raise PermanentStepError(f"step returned {type(outcome).__name__}, not StepOutcome")
        return {"ok": True, "status": outcome.status.value, "evidence": dict(outcome.evidence),
                "artifacts": {k: a.to_json() for k, a in outcome.artifacts.items()}}
    except RetryableStepError as exc:
        return _failure("retryable", exc, exc.evidence, exc.delay_s)
    except PermanentStepError as exc:
        return _failure("permanent", exc, exc.evidence)
    except Exception as exc:
        return _failure("permanent", exc, {"traceback": traceback.format_exc(limit=20)})


def _failure(kind: str, exc: BaseException, evidence: dict[str, Any],
             delay_s: float | None = None) -> dict[str, Any]:
    return {"ok": False, "kind": kind, "type": type(exc).__name__, "message": str(exc),
            "evidence": evidence, "delay_s": delay_s}


def main(argv: list[str]) -> int:
    spec_path = Path(argv[0])
    spec = json.loads(spec_path.read_text())
    die_with_daemon(spec["parent_pid"])
    result = run_spec(spec)
    out = Path(spec["result_path"])
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, out)  # atomic: the runner sees a whole result or none
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
