"""The closed loop on the demo scenario, timed: from the shift's onset to detection and to the
new version serving on every replica, ground-truth accuracy before the shift, during it and
after recovery; then a stationary run of the same length, whose actions are false alarms.

    .venv/bin/python bench/loop.py [--workdir var/bench-loop] [--rate 20]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This directory holds bench/actions.py, which would shadow the `actions` package: the project
# root goes first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import shutil
from pathlib import Path

from harness.loop import run_scenario
from harness.processes import LoopSettings, Stack
from harness.report import summary_line, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("var/bench-loop"))
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--shift-at", type=float, default=60.0)
    parser.add_argument("--duration", type=float, default=900.0)
    parser.add_argument("--after-recovery", type=float, default=60.0)
    args = parser.parse_args()
    from harness.base_model import prepare_base_model
    from simulator.scenarios import ScenarioConfig

    workdir = args.workdir.resolve()
    base = prepare_base_model(Path("var/demo/cache").resolve())
    print(f"base model: {json.dumps(base.metrics)[:300]}")
    settings = LoopSettings()

    def scenario(kind: str, duration: float) -> ScenarioConfig:
        return ScenarioConfig(kind=kind, rate=args.rate, duration_s=duration,
                              shift_at_s=args.shift_at, label_delay_s=3.0, label_jitter_s=2.0,
                              label_coverage=0.9, seed=7)

    shutil.rmtree(workdir, ignore_errors=True)
    with Stack(workdir / "shift", settings) as stack:
        stack.start(base.checkpoint, base.deployable)
        shifted = run_scenario(stack, scenario("abrupt-shift", args.duration),
                               after_recovery_s=args.after_recovery)
    for moment in shifted.state.moments:
        print(f"{moment.t_s:7.1f}s  {moment.kind:<11} {moment.text}")
    report = write_report(shifted, workdir / "report.html", "lifeguard bench: the loop")
    print(f"report: {report}")
    length = shifted.state.now_s()
    with Stack(workdir / "stationary", settings) as stack:
        stack.start(base.checkpoint, base.deployable)
        stationary = run_scenario(stack, scenario("stationary", max(length, 120.0)))
    print(f"stationary run: {length:.0f}s, {len(stationary.state.evaluations)} evaluations, "
          f"{stationary.runs_created} runs")
    target = "met" if (shifted.post or 0) >= 0.97 * (shifted.pre or 1) else "MISSED"
    print(f"post >= 0.97 * pre: {target}")
    print(summary_line(shifted, false_actions=stationary.runs_created))


if __name__ == "__main__":
    main()
