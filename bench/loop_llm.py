"""The closed loop for a generator on the ``support`` scenario, timed: from the shift to the
router's chats becoming the thermostat's, to detection and to the retrained version serving on
every replica; ground-truth quality (ROUGE-L of each answer against the known correct one)
before the shift, during it and after recovery; then a stationary run of the same length,
whose actions are false alarms. Targets: post >= 0.95 * pre, false_actions 0.

    .venv/bin/python bench/loop_llm.py [--workdir var/bench-loop-llm] [--rate 3]
        [--endpoint chat|completions]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This directory holds bench/actions.py, which would shadow the `actions` package: the project
# root goes first on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import shutil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path("var/bench-loop-llm"))
    parser.add_argument("--rate", type=float, default=3.0)
    parser.add_argument("--shift-at", type=float, default=60.0)
    parser.add_argument("--duration", type=float, default=900.0)
    parser.add_argument("--after-recovery", type=float, default=60.0)
    parser.add_argument("--tiny", action="store_true", help="the tests' smaller model")
    parser.add_argument("--endpoint", choices=("chat", "completions"), default="chat",
                        help="the replicas' OpenAI endpoint the chats go to")
    args = parser.parse_args()
    from harness.chat_loop import run_support
    from harness.processes import Stack
    from harness.report import write_report
    from harness.support_demo import support_scenario, support_settings
    from harness.support_model import prepare_support_model

    workdir = args.workdir.resolve()
    base = prepare_support_model(Path("var/demo/cache").resolve(), tiny=args.tiny,
                                 say=lambda line: print(line, flush=True))
    settings = support_settings("auto", args.tiny)
    shutil.rmtree(workdir, ignore_errors=True)
    with Stack(workdir / "shift", settings) as stack:
        stack.start(base.checkpoint, base.deployable)
        shifted = run_support(stack, support_scenario(args.rate, args.shift_at, args.duration),
                              after_recovery_s=args.after_recovery, endpoint=args.endpoint)
    for moment in shifted.state.moments:
        print(f"{moment.t_s:7.1f}s  {moment.kind:<11} {moment.text}", flush=True)
    print(f"report: {write_report(shifted, workdir / 'report.html', 'lifeguard bench: llm loop')}")
    length = max(shifted.state.now_s(), 120.0)
    with Stack(workdir / "stationary", settings) as stack:
        stack.start(base.checkpoint, base.deployable)
        stationary = run_support(stack, support_scenario(args.rate, args.shift_at, length,
                                                         stationary=True),
                                 endpoint=args.endpoint)
    print(f"stationary run: {length:.0f}s, {len(stationary.state.evaluations)} evaluations, "
          f"{stationary.runs_created} runs")
    pre, post = shifted.pre, shifted.post
    met = pre is not None and post is not None and post >= 0.95 * pre
    print(f"post >= 0.95 * pre: {'met' if met else 'MISSED'}")

    def fmt(value: float | None, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    print(f"llm loop detect_s {fmt(shifted.detect_s, '.1f')}, recover_s "
          f"{fmt(shifted.recover_s, '.1f')}, quality pre {fmt(pre, '.3f')} during "
          f"{fmt(shifted.during, '.3f')} post {fmt(post, '.3f')}, false_actions "
          f"{stationary.runs_created}")


if __name__ == "__main__":
    main()
