"""The live terminal view of the loop (rich): traffic and accuracy per version, the detector
verdicts, the run and its steps, what each replica serves, and the timeline of moments."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from harness.loop import LoopState

_STYLE = {"shift": "yellow", "breach": "red", "run": "cyan", "step": "cyan",
          "promoted": "green", "recovered": "bold green", "rolled_back": "magenta",
          "failed": "red", "rejected": "magenta"}


def render(state: LoopState, approve_hint: str | None = None) -> Group:
    return Group(_traffic(state), _verdicts(state), _runs(state, approve_hint), _timeline(state))


def _traffic(state: LoopState) -> Panel:
    sim = state.simulator
    if hasattr(sim, "quality_between"):
        return _chat_traffic(state, sim)
    table = Table.grid(padding=(0, 2))
    table.add_row("t", f"{state.now_s():6.0f} s", "replicas serve",
                  " ".join(f"v{v}" if v is not None else "-" for v in state.served))
    if sim is not None:
        recent = _recent_accuracy(sim)
        table.add_row("requests", f"{sim.sent:,} ({sim.failed} failed)", "labels sent",
                      f"{sim.labels_sent:,}")
        table.add_row("accuracy, last 20 s",
                      "  ".join(f"v{v}: {a:.1%}" for v, a in sorted(recent.items())) or "-",
                      "shifted traffic", f"{sim.shifted_sent:,}")
    return Panel(table, title="traffic (simulator's ground truth)", border_style="blue")


def _chat_traffic(state: LoopState, sim: Any, span_s: float = 20.0) -> Panel:
    """A generator's traffic: answer quality (ROUGE-L against the known correct answer) and
    the client's TTFT per serving version over the last ``span_s``."""
    table = Table.grid(padding=(0, 2))
    table.add_row("t", f"{state.now_s():6.0f} s", "replicas serve",
                  " ".join(f"v{v}" if v is not None else "-" for v in state.served))
    table.add_row("chats", f"{sim.sent:,} ({sim.failed} failed)", "feedback sent",
                  f"{sim.feedback_sent:,}")
    points = sim.timeline
    newest = max((p.t_s for p in points), default=0.0)
    recent: dict[str, list[float]] = {}
    for p in points:
        if p.t_s >= newest - span_s and p.answered:
            seen = recent.setdefault(p.version, [0, 0.0, 0.0])
            seen[0] += p.answered
            seen[1] += p.score_sum
            seen[2] += p.ttft_sum_ms
    table.add_row(f"quality, last {span_s:.0f} s",
                  "  ".join(f"v{v}: {q / n:.3f}" for v, (n, q, _) in sorted(recent.items()))
                  or "-",
                  "TTFT", "  ".join(f"v{v}: {t / n:.0f} ms"
                                   for v, (n, _, t) in sorted(recent.items())) or "-")
    return Panel(table, title="chats (simulator's ground truth: ROUGE-L vs the right answer)",
                 border_style="blue")


def _recent_accuracy(sim: Any, span_s: float = 20.0) -> dict[str, float]:
    if not sim.timeline:
        return {}
    newest = max(p.t_s for p in sim.timeline)
    totals: dict[str, list[int]] = {}
    for point in sim.timeline:
        if point.t_s >= newest - span_s:
            seen = totals.setdefault(point.version, [0, 0])
            seen[0] += point.answered
            seen[1] += point.correct
    return {v: c / a for v, (a, c) in totals.items() if a}


def _verdicts(state: LoopState) -> Panel:
    table = Table(expand=True, show_edge=False)
    for column in ("detector", "version", "statistic", "threshold", "verdict"):
        table.add_column(column)
    latest: dict[str, dict[str, Any]] = {}
    for evaluation in state.evaluations:
        latest[evaluation["model_version"]] = evaluation
    for version, evaluation in sorted(latest.items()):
        for result in evaluation.get("results", [])[:12]:
            verdict = result["verdict"]
            style = {"breach": "red", "ok": "green"}.get(verdict, "dim")
            statistic, threshold = result["statistic"], result["threshold"]
            # escaped: "drift.length[input_text]" is not rich markup
            table.add_row(escape(result["key"]), f"v{version}",
                          "-" if statistic is None else f"{statistic:.4g}",
                          "-" if threshold is None else f"{threshold:.4g}",
                          f"[{style}]{verdict}[/]")
    return Panel(table, title="latest evaluation per version", border_style="blue")


def _runs(state: LoopState, approve_hint: str | None) -> Panel:
    table = Table(expand=True, show_edge=False)
    # The run id is what `lifeguard approve` needs: never cut, the other columns fold.
    table.add_column("run", no_wrap=True, min_width=max([3, *map(len, state.runs)]))
    for column in ("pipeline", "state", "step"):
        table.add_column(column, overflow="fold")
    for rid, run in state.runs.items():
        table.add_row(rid, run["pipeline"], run["state"],
                      f"{run.get('step', 0)}/{run.get('n_steps', '?')}")
        if run["state"] == "pending_approval" and approve_hint:
            table.add_row("", "", f"[bold yellow]{approve_hint.format(run=rid)}[/]", "")
    if not state.runs:
        table.add_row("-", "-", "no run yet", "-")
    return Panel(table, title="action runs", border_style="blue")


def _timeline(state: LoopState) -> Panel:
    lines = [f"[{_STYLE.get(m.kind, 'white')}]{m.t_s:7.1f}s  {m.kind:<11} {m.text}[/]"
             for m in state.moments[-12:]]
    return Panel("\n".join(lines) or "waiting for traffic", title="timeline",
                 border_style="blue")
