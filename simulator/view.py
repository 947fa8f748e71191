"""How a simulation looks in a terminal: one rich table of a snapshot (traffic, labels, and the
ground-truth accuracy per phase and version), reusable by the CLI and the demo."""

from __future__ import annotations

from rich.table import Table

from simulator.stats import AnswerStats, SimulatorSnapshot

_PHASES = ("steady", "pre", "ramp", "post")


def _pct(stats: AnswerStats | None) -> str:
    return "-" if stats is None or stats.accuracy is None else f"{stats.accuracy:.1%}"


def snapshot_table(snapshot: SimulatorSnapshot, title: str = "simulator") -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    state = "error: " + snapshot.error if snapshot.error else (
        "done" if snapshot.done else "running")
    table.add_row("elapsed", f"{snapshot.elapsed_s:.1f} s ({state})")
    table.add_row("requests", f"{snapshot.sent}/{snapshot.planned} sent, {snapshot.ok} ok, "
                              f"{snapshot.failed} failed, {snapshot.in_flight} in flight, "
                              f"{snapshot.lag_s:.1f} s behind schedule, "
                              f"{snapshot.shifted_sent} from the shifted domain")
    table.add_row("labels", f"{snapshot.labels_sent} sent, {snapshot.labels_pending} waiting, "
                            f"{snapshot.labels_dropped} dropped, "
                            f"{snapshot.labels_abandoned} abandoned, "
                            f"{snapshot.labels_failed} failed")
    for phase in _PHASES:
        if phase not in snapshot.by_phase:
            continue
        stats = snapshot.by_phase[phase]
        versions = snapshot.by_phase_version.get(phase, {})
        per_version = ", ".join(f"v{v} {_pct(s)} of {s.answered}"
                                for v, s in sorted(versions.items()))
        latency = stats.mean_latency_ms or 0.0
        table.add_row(f"accuracy {phase}",
                      f"{_pct(stats)} of {stats.answered} ({per_version}); "
                      f"mean latency {latency:.1f} ms")
    for reason, count in sorted(snapshot.failures.items(), key=lambda kv: -kv[1])[:5]:
        table.add_row("failure", f"{count} × {reason}")
    return table
