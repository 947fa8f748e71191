"""The loop's HTML report (plotly): accuracy over time by version, drift statistics, latency,
and every action annotated on the time axis, with the summary numbers on top."""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness.loop import LoopResult

_COLORS = {"shift": "orange", "breach": "red", "run": "teal", "step": "teal",
           "promoted": "green", "recovered": "green", "rolled_back": "purple"}


def write_report(result: LoopResult, path: Path, title: str = "lifeguard: the loop") -> Path:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    state = result.state
    figure = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                           subplot_titles=("accuracy by serving version (ground truth)",
                                           "drift and accuracy statistics (daemon)",
                                           "p95 latency, ms (daemon)"))
    by_version: dict[str, list[tuple[float, float]]] = defaultdict(list)
    if state.simulator is not None:
        for point in state.simulator.timeline:
            if point.answered:
                by_version[point.version].append((point.t_s, point.correct / point.answered))
    for version, points in sorted(by_version.items()):
        figure.add_trace(go.Scatter(x=[t for t, _ in points], y=[a for _, a in points],
                                    mode="lines+markers", name=f"accuracy v{version}"), 1, 1)
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    latency: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for evaluation in state.evaluations:
        for r in evaluation.get("results", []):
            if r["statistic"] is None:
                continue
            point = (evaluation["seen_s"], r["statistic"])
            if r["key"] == "latency.p95_ms":
                latency[f"v{evaluation['model_version']}"].append(point)
            elif r["key"].startswith(("drift.", "accuracy.")):
                series[f"{r['key']} v{evaluation['model_version']}"].append(point)
    for name, points in sorted(series.items()):
        figure.add_trace(go.Scatter(x=[t for t, _ in points], y=[s for _, s in points],
                                    mode="lines+markers", name=name), 2, 1)
    for name, points in sorted(latency.items()):
        figure.add_trace(go.Scatter(x=[t for t, _ in points], y=[s for _, s in points],
                                    mode="lines+markers", name=f"p95 {name}"), 3, 1)
    for moment in state.moments:
        if moment.kind == "step":
            continue
        figure.add_vline(x=moment.t_s, line_dash="dot",
                         line_color=_COLORS.get(moment.kind, "gray"))
        figure.add_annotation(x=moment.t_s, y=1.02, yref="paper", text=moment.kind,
                              showarrow=False, textangle=-60, font={"size": 10})
    figure.update_layout(height=950, title=title, xaxis3_title="seconds since traffic began")
    rows = "".join(f"<tr><td>{m.t_s:.1f}</td><td>{html.escape(m.kind)}</td>"
                   f"<td>{html.escape(m.text)}</td></tr>" for m in state.moments)
    summary = summary_line(result)
    body = (f"<h1>{html.escape(title)}</h1><p><code>{html.escape(summary)}</code></p>"
            + figure.to_html(full_html=False, include_plotlyjs=True)
            + "<h2>timeline</h2><table border=1 cellpadding=4><tr><th>t (s)</th><th>what</th>"
            f"<th>detail</th></tr>{rows}</table>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>"
                    f"{html.escape(title)}</title></head><body>{body}</body></html>")
    return path


def summary_line(result: LoopResult, false_actions: int | None = None) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    line = (f"loop detect_s {fmt(result.detect_s, '.1f')}, recover_s "
            f"{fmt(result.recover_s, '.1f')}, accuracy pre {fmt(result.pre, '.3f')} during "
            f"{fmt(result.during, '.3f')} post {fmt(result.post, '.3f')}")
    if false_actions is not None:
        line += f", false_actions {false_actions}"
    return line
