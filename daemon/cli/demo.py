"""``lifeguard demo``: the closed loop on the embedded stack, shown live in the terminal."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from daemon.cli import app


@app.command()
def demo(
    approve: Annotated[bool, typer.Option(
        "--approve", help="Policy in approve mode: the retrain waits for `lifeguard approve`.")
    ] = False,
    workdir: Annotated[Path, typer.Option(help="Where the stack, cache and report live.")] = Path(
        "var/demo"),
    rate: Annotated[float | None, typer.Option(
        help="Requests per second (default 20 for reviews, 3 for support).")] = None,
    shift_at: Annotated[float, typer.Option(help="Seconds of steady traffic before the shift.")
                        ] = 60.0,
    duration: Annotated[float, typer.Option(help="Longest the scenario runs, in seconds.")
                        ] = 900.0,
    after_recovery: Annotated[float, typer.Option(
        help="Seconds of traffic kept after the new version serves everywhere.")] = 60.0,
    scenario: Annotated[str, typer.Option(
        help="reviews: a sentiment classifier and a domain shift; support: a small GPT-2 "
        "support chat bot whose users move to a new product.")] = "reviews",
    tiny: Annotated[bool, typer.Option(
        "--tiny", hidden=True, help="For tests only: a tiny classifier built in seconds "
        "instead of MiniLM, two replicas; the loop's numbers mean nothing.")] = False,
) -> None:
    """Broker, three replicas, the daemon (auto mode) and the simulator: steady traffic, then a
    domain shift with late labels; watch the daemon detect, retrain, gate, quantize, canary and
    promote. Writes an HTML report at the end; Ctrl-C stops everything cleanly."""
    if scenario not in ("reviews", "support"):
        raise typer.BadParameter("--scenario must be reviews or support")
    rate = rate if rate is not None else 3.0 if scenario == "support" else 20.0
    code = _harness_demo().run_demo(approve, workdir, rate, shift_at, duration, after_recovery,
                                     tiny, scenario)
    # The stack is stopped and the report written. Skip the interpreter's teardown: with
    # torch and friends loaded it adds seconds to a Ctrl-C that promises a prompt exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _harness_demo() -> Any:
    """The demo stack lives in the source checkout (``harness/``), not in the wheel: loaded by
    name so the installed packages never import it."""
    try:
        return importlib.import_module("harness.demo")
    except ModuleNotFoundError as exc:
        raise typer.BadParameter("the demo runs from a source checkout: `make demo` there "
                                 "(it puts the checkout's harness/ on PYTHONPATH)") from exc
