"""The loop's HTML report (plotly): the ground truth by serving version (accuracy, or a
generator's reference score and TTFT), one panel per detector family with each statistic
against its own threshold and its own legend, every action on the time axis, and the summary."""

from __future__ import annotations

import html
from collections import defaultdict
from pathlib import Path
from typing import Any

from harness.loop import LoopResult

_COLORS = {"shift": "orange", "breach": "red", "run": "teal", "step": "teal",
           "promoted": "green", "recovered": "green", "rolled_back": "purple"}
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#7f7f7f", "#bcbd22", "#17becf")

Series = dict[str, list[tuple[float, float]]]


def detector_families(evaluations: list[dict[str, Any]]
                      ) -> dict[str, tuple[Series, Series]]:
    """Per detector family (the key's first part: drift, accuracy, latency, generation,
    quality, ...): the statistic and the threshold of each ``key vVERSION`` over time."""
    families: dict[str, tuple[Series, Series]] = {}
    for evaluation in evaluations:
        for r in evaluation.get("results", []):
            if r["statistic"] is None:
                continue
            family = r["key"].split(".", 1)[0]
            stats, thresholds = families.setdefault(family, (defaultdict(list),
                                                             defaultdict(list)))
            name = f"{r['key']} v{evaluation['model_version']}"
            stats[name].append((evaluation["seen_s"], r["statistic"]))
            if r.get("threshold") is not None:
                thresholds[name].append((evaluation["seen_s"], r["threshold"]))
    return dict(sorted(families.items()))


def _ground_truth(sim: Any) -> tuple[str, Series, Series]:
    """(title, quality by version, client TTFT by version) from the simulator's timeline."""
    quality: Series = defaultdict(list)
    ttft: Series = defaultdict(list)
    generative = hasattr(sim, "quality_between")
    for point in sim.timeline if sim is not None else ():
        if not point.answered:
            continue
        if generative:
            quality[point.version].append((point.t_s, point.score_sum / point.answered))
            ttft[point.version].append((point.t_s, point.ttft_sum_ms / point.answered))
        else:
            quality[point.version].append((point.t_s, point.correct / point.answered))
    title = ("answer quality by serving version (ROUGE-L vs the correct answer, ground truth)"
             if generative else "accuracy by serving version (ground truth)")
    return title, quality, ttft


def write_report(result: LoopResult, path: Path, title: str = "lifeguard: the loop") -> Path:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    state = result.state
    truth_title, quality, ttft = _ground_truth(state.simulator)
    families = detector_families(state.evaluations)
    titles = [truth_title] + (["time to first token by serving version, ms (client)"]
                              if ttft else [])
    titles += [f"detector family '{f}': statistic (solid) vs threshold (dotted)"
               for f in families]
    rows = len(titles)
    figure = make_subplots(rows=rows, cols=1, shared_xaxes=True, vertical_spacing=0.04,
                           subplot_titles=titles)
    panels: list[Series] = [quality] + ([ttft] if ttft else [])
    for row, series in enumerate(panels, start=1):
        for version, points in sorted(series.items()):
            figure.add_trace(go.Scatter(x=[t for t, _ in points], y=[v for _, v in points],
                                        mode="lines+markers", name=f"v{version}",
                                        legend=_legend(row)), row, 1)
    for row, (stats, thresholds) in enumerate(families.values(), start=len(panels) + 1):
        for i, (name, points) in enumerate(sorted(stats.items())):
            color = _PALETTE[i % len(_PALETTE)]
            figure.add_trace(go.Scatter(x=[t for t, _ in points], y=[s for _, s in points],
                                        mode="lines+markers", name=name, legendgroup=name,
                                        line={"color": color}, legend=_legend(row)), row, 1)
            bound = thresholds.get(name, [])
            if bound:
                figure.add_trace(go.Scatter(x=[t for t, _ in bound], y=[s for _, s in bound],
                                            mode="lines", name=f"{name} threshold",
                                            legendgroup=name, showlegend=False,
                                            line={"color": color, "dash": "dot"},
                                            legend=_legend(row)), row, 1)
    for moment in state.moments:
        if moment.kind == "step":
            continue
        figure.add_vline(x=moment.t_s, line_dash="dot",
                         line_color=_COLORS.get(moment.kind, "gray"))
        figure.add_annotation(x=moment.t_s, y=1.02, yref="paper", text=moment.kind,
                              showarrow=False, textangle=-60, font={"size": 10})
    height = 300 * rows
    layout: dict[str, Any] = {"height": height, "title": title,
                              f"xaxis{rows}_title": "seconds since traffic began"}
    for row in range(1, rows + 1):
        # Each panel's legend beside it: a family's series never share a legend with another's.
        domain = figure.layout[f"yaxis{'' if row == 1 else row}"].domain
        layout[_legend(row)] = {"y": domain[1], "yanchor": "top", "x": 1.02,
                                "font": {"size": 10}}
    figure.update_layout(**layout)
    lines = "".join(f"<tr><td>{m.t_s:.1f}</td><td>{html.escape(m.kind)}</td>"
                    f"<td>{html.escape(m.text)}</td></tr>" for m in state.moments)
    summary = summary_line(result)
    body = (f"<h1>{html.escape(title)}</h1><p><code>{html.escape(summary)}</code></p>"
            + figure.to_html(full_html=False, include_plotlyjs=True)
            + "<h2>timeline (actions)</h2><table border=1 cellpadding=4><tr><th>t (s)</th>"
            f"<th>what</th><th>detail</th></tr>{lines}</table>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>"
                    f"{html.escape(title)}</title></head><body>{body}</body></html>")
    return path


def _legend(row: int) -> str:
    return "legend" if row == 1 else f"legend{row}"


def summary_line(result: LoopResult, false_actions: int | None = None) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "n/a" if value is None else format(value, spec)

    measure = "quality" if hasattr(result.state.simulator, "quality_between") else "accuracy"
    line = (f"loop detect_s {fmt(result.detect_s, '.1f')}, recover_s "
            f"{fmt(result.recover_s, '.1f')}, {measure} pre {fmt(result.pre, '.3f')} during "
            f"{fmt(result.during, '.3f')} post {fmt(result.post, '.3f')}")
    if false_actions is not None:
        line += f", false_actions {false_actions}"
    return line


def print_summary(console: Any, result: LoopResult, report: Path) -> None:
    """The end of a demo in the terminal: every moment but the steps, the summary line, and
    where the HTML report is."""
    console.rule("summary")
    for moment in result.state.moments:
        if moment.kind != "step":
            console.print(f"{moment.t_s:7.1f}s  {moment.kind:<11} {moment.text}")
    console.print(f"[bold]{summary_line(result)}[/]")
    console.print(f"report: {report}")
