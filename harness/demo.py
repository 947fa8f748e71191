"""``lifeguard demo``'s body: the closed loop on the embedded stack, shown live in the terminal.
It lives in the source checkout (the wheel does not ship the stack)."""

from __future__ import annotations

from pathlib import Path


def run_demo(approve: bool, workdir: Path, rate: float, shift_at: float, duration: float,
             after_recovery: float) -> int:
    """Run the demo scenario; returns the process exit code (130 when interrupted)."""
    import logging
    import shutil
    import time

    from rich.console import Console
    from rich.live import Live

    from harness.base_model import prepare_base_model
    from harness.loop import LoopResult, run_scenario
    from harness.processes import TOKEN, LoopSettings, Stack
    from harness.report import summary_line, write_report
    from harness.view import render
    from simulator.scenarios import ScenarioConfig

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    console = Console()
    workdir = workdir.resolve()
    console.rule("[bold]lifeguard demo: the closed loop")
    started = time.monotonic()
    with console.status("preparing the base model (first run: fine-tunes MiniLM on the "
                        "electronics reviews, about two minutes; cached after)"):
        base = prepare_base_model(workdir / "cache")
    console.print(f"base model ready in {time.monotonic() - started:.0f}s: {base.checkpoint}")
    run_dir = workdir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    settings = LoopSettings(mode="approve" if approve else "auto")
    scenario = ScenarioConfig(kind="abrupt-shift", rate=rate, duration_s=duration,
                              shift_at_s=shift_at, label_delay_s=3.0, label_jitter_s=2.0,
                              label_coverage=0.9, seed=7)
    hint: str | None = None
    result: LoopResult | None = None
    with Stack(run_dir, settings) as stack:
        with console.status("starting the broker, three replicas and the daemon"):
            stack.start(base.checkpoint, base.deployable)
        console.print(f"daemon: {stack.daemon_url}  (metrics at /metrics, API at /api/v1, "
                      f"token {TOKEN})")
        if approve:
            hint = (f"LIFEGUARD_URL={stack.daemon_url} LIFEGUARD_TOKEN={TOKEN} "
                    "lifeguard approve {run}")
        try:
            with Live(console=console, refresh_per_second=2, transient=False) as live:
                def tick(state):  # type: ignore[no-untyped-def]
                    live.update(render(state, hint))

                result = run_scenario(stack, scenario, on_tick=tick,
                                      after_recovery_s=after_recovery)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: stopping the stack cleanly[/]")
    if result is None:
        return 130
    report = write_report(result, workdir / "report.html")
    console.rule("summary")
    for moment in result.state.moments:
        if moment.kind != "step":
            console.print(f"{moment.t_s:7.1f}s  {moment.kind:<11} {moment.text}")
    console.print(f"[bold]{summary_line(result)}[/]")
    console.print(f"report: {report}")

    return 0
