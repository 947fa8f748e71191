"""``lifeguard demo --scenario support``: the closed loop for a generator. A small GPT-2 trained
on the router's support chats serves on three replicas; the chats shift to the thermostat, the
daemon's quality and rating detectors breach, a retrain on the daemon's own snapshot gates,
exports, quantizes, canaries and promotes, and answers recover."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from harness.processes import LoopSettings
    from simulator.support import SupportScenarioConfig

MODEL = "support-bot"


def support_settings(mode: str = "auto", tiny: bool = False) -> LoopSettings:
    """The loop's knobs for the support bot on two CPU cores."""
    from harness.processes import LoopSettings

    return LoopSettings(mode=mode, replicas=2 if tiny else 3, window=240, reference=150,
                        evaluate_every=50, min_labels=60, hold=2, canary_events=40,
                        canary_labels=15, train_epochs=20, train_lr=2e-3, train_max_length=64,
                        embedding_sample=0, model=MODEL, task="causal-lm")


def support_scenario(rate: float, shift_at: float, duration: float, stationary: bool = False,
                     seed: int = 7) -> SupportScenarioConfig:
    from simulator.support import SupportScenarioConfig

    return SupportScenarioConfig(rate=rate, duration_s=duration, shift_at_s=shift_at,
                                 stationary=stationary, model=MODEL, seed=seed,
                                 feedback_delay_s=3.0, feedback_jitter_s=2.0)


def run_support_demo(console: Console, approve: bool, workdir: Path, rate: float,
                     shift_at: float, duration: float, after_recovery: float,
                     tiny: bool) -> int:
    from rich.live import Live

    from harness.chat_loop import run_support
    from harness.processes import TOKEN, Stack
    from harness.report import print_summary, write_report
    from harness.support_model import prepare_support_model
    from harness.view import render

    workdir = workdir.resolve()
    console.rule("[bold]lifeguard demo: the closed loop for a support chat bot")
    started = time.monotonic()
    with console.status("preparing the support model (first run only; cached after)") as status:
        base = prepare_support_model(workdir / "cache", tiny=tiny,
                                     say=lambda line: status.update(line))
    console.print(f"support model ready in {time.monotonic() - started:.0f}s: {base.checkpoint}")
    run_dir = workdir / "run-support"
    shutil.rmtree(run_dir, ignore_errors=True)
    settings = support_settings("approve" if approve else "auto", tiny)
    scenario = support_scenario(rate, shift_at, duration)
    hint = None
    with Stack(run_dir, settings) as stack:
        with console.status(f"starting the broker, {settings.replicas} replicas and the "
                            "daemon"):
            stack.start(base.checkpoint, base.deployable)
        console.print(f"daemon: {stack.daemon_url}  (metrics at /metrics, API at /api/v1, "
                      f"token {TOKEN})")
        if approve:
            hint = (f"LIFEGUARD_URL={stack.daemon_url} LIFEGUARD_TOKEN={TOKEN} "
                    "lifeguard approve {run}")
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            def tick(state):  # type: ignore[no-untyped-def]
                live.update(render(state, hint))

            result = run_support(stack, scenario, on_tick=tick, after_recovery_s=after_recovery)
    report = write_report(result, workdir / "report-support.html",
                          title="lifeguard: the loop for a support chat bot")
    print_summary(console, result, report)
    return 0
