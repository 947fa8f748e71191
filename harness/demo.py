"""``lifeguard demo``'s body: the closed loop on the embedded stack, shown live in the terminal.
It lives in the source checkout (the wheel does not ship the stack)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


class Stopped(KeyboardInterrupt):
    """SIGTERM, delivered like Ctrl-C so that one path stops the stack; exits 0, not 130."""


@contextmanager
def _signals_stop_once() -> Iterator[None]:
    """SIGINT and SIGTERM raise in the main thread, once; a second signal while the stack is
    stopping exits at once (the children get SIGTERM from the kernel as their parent dies)."""
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            os._exit(128 + signum)
        fired = True
        raise Stopped() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_demo(approve: bool, workdir: Path, rate: float, shift_at: float, duration: float,
             after_recovery: float, tiny: bool = False, scenario: str = "reviews") -> int:
    """Run the demo scenario; returns the process exit code (130 after Ctrl-C, 0 after
    SIGTERM: both stop the whole stack in order first)."""
    from rich.console import Console

    console = Console()
    with _signals_stop_once():
        try:
            if scenario == "support":
                import logging

                from harness.support_demo import run_support_demo

                logging.basicConfig(level=logging.WARNING)
                logging.getLogger("kafka").setLevel(logging.CRITICAL)
                return run_support_demo(console, approve, workdir, rate, shift_at, duration,
                                        after_recovery, tiny)
            return _run(console, approve, workdir, rate, shift_at, duration, after_recovery,
                        tiny)
        except Stopped:
            console.print("[yellow]terminated: the stack is stopped[/]")
            return 0
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: the stack is stopped[/]")
            return 130


def _run(console: Console, approve: bool, workdir: Path, rate: float, shift_at: float,
         duration: float, after_recovery: float, tiny: bool) -> int:
    import logging
    import shutil
    import time

    from rich.live import Live

    from harness.base_model import prepare_base_model, prepare_tiny_base_model
    from harness.loop import run_scenario
    from harness.processes import TOKEN, LoopSettings, Stack
    from harness.report import print_summary, write_report
    from harness.view import render
    from simulator.scenarios import ScenarioConfig

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    workdir = workdir.resolve()
    console.rule("[bold]lifeguard demo: the closed loop")
    started = time.monotonic()
    if tiny:
        base = prepare_tiny_base_model(workdir / "cache")
    else:
        with console.status("preparing the base model (first run: fine-tunes MiniLM on the "
                            "electronics reviews, about two minutes; cached after)"):
            base = prepare_base_model(workdir / "cache")
    console.print(f"base model ready in {time.monotonic() - started:.0f}s: {base.checkpoint}")
    run_dir = workdir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    mode = "approve" if approve else "auto"
    settings = (LoopSettings(mode=mode, replicas=2, window=300, reference=200, min_labels=100,
                             embedding_sample=0, train_lr=2e-3, train_max_length=48)
                if tiny else LoopSettings(mode=mode))
    scenario = ScenarioConfig(kind="abrupt-shift", rate=rate, duration_s=duration,
                              shift_at_s=shift_at, label_delay_s=3.0, label_jitter_s=2.0,
                              label_coverage=0.9, seed=7)
    hint: str | None = None
    with Stack(run_dir, settings) as stack:
        with console.status(f"starting the broker, {settings.replicas} replicas and the "
                            "daemon"):
            stack.start(base.checkpoint, base.deployable)
        console.print(f"daemon: {stack.daemon_url}  (metrics at /metrics, API at /api/v1, "
                      f"token {TOKEN})")
        console.print(f"stack pids: {' '.join(str(pid) for pid in stack.pids())}")
        if approve:
            hint = (f"LIFEGUARD_URL={stack.daemon_url} LIFEGUARD_TOKEN={TOKEN} "
                    "lifeguard approve {run}")
        with Live(console=console, refresh_per_second=2, transient=False) as live:
            def tick(state):  # type: ignore[no-untyped-def]
                live.update(render(state, hint))

            result = run_scenario(stack, scenario, on_tick=tick,
                                  after_recovery_s=after_recovery)
    report = write_report(result, workdir / "report.html")
    print_summary(console, result, report)
    return 0
