"""Builds lifeguard's Grafana dashboard (``lifeguard.json`` beside this file) from a panel list.

The JSON is what you import; this file is what you edit. Regenerate with
``python ops/grafana/dashboard.py``; tests/test_ops_dashboard.py fails when the two disagree and
runs every query below against a real Prometheus scraping a real daemon.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("lifeguard.json")
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
M = 'model=~"$model"'
MV = 'model=~"$model", version=~"$version"'
RATE = "[$__rate_interval]"
# The latency SLO of ops/prometheus/rules: within 1 s ("1.0" from the client, "1" after
# Prometheus 3 normalises le).
SLO_LE = r'le=~"1(\\.0)?"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    instant: bool = False  # tables and stats read the latest value only
    fmt: str = "time_series"  # "table", "heatmap"


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    kind: str = "timeseries"  # "stat", "table", "heatmap"
    unit: str = "short"
    width: int = 12
    height: int = 8
    description: str = ""
    stack: bool = False
    options: dict[str, Any] = field(default_factory=dict)


def q(expr: str, legend: str = "", **kw: Any) -> tuple[Query, ...]:
    return (Query(" ".join(expr.split()), legend, **kw),)


def against_threshold(selector: str, legend: str) -> tuple[Query, ...]:
    """A detector's statistic and the threshold it is judged against, as two series each."""
    return (Query(f"lifeguard_detector_statistic{{{MV}, {selector}}}",
                  f"{{{{model}}}} v{{{{version}}}} {legend}"),
            Query(f"lifeguard_detector_threshold{{{MV}, {selector}}}",
                  f"threshold {{{{model}}}} v{{{{version}}}} {legend}"))


ROWS: list[tuple[str, list[Panel]]] = [
    ("Overview", [
        Panel("Daemons up", q('sum(up{job="lifeguard"})', instant=True), "stat", width=4,
              height=4, description="Scrape targets of job lifeguard that answer."),
        Panel("Events / s", q(f"sum(rate(lifeguard_events_total{{{M}}}{RATE}))", instant=True),
              "stat", "reqps", width=4, height=4),
        Panel("Consumer lag", q("sum(lifeguard_consumer_lag_messages)", instant=True), "stat",
              width=4, height=4, description="Messages behind the high watermark, all topics."),
        Panel("Dead letters / s",
              q(f"sum(rate(lifeguard_dead_lettered_messages_total{RATE}))", instant=True),
              "stat", "reqps", width=4, height=4),
        Panel("Partitions owned", q("sum(lifeguard_assigned_partitions)", instant=True), "stat",
              width=4, height=4),
        Panel("Detectors breached",
              q(f"sum(lifeguard_detector_breached{{{MV}}})", instant=True), "stat", width=4,
              height=4, description="Detector results past their threshold at the last "
              "evaluation."),
    ]),
    ("Traffic", [
        Panel("Inference events / s", q(
            f"sum by (model, version, status) (rate(lifeguard_events_total{{{MV}}}{RATE}))",
            "{{model}} v{{version}} {{status}}"), unit="reqps", stack=True),
        Panel("Inference error ratio", q(
            f"""sum by (model, version) (rate(lifeguard_events_total{{{MV}, status="error"}}{RATE}))
            / sum by (model, version) (rate(lifeguard_events_total{{{MV}}}{RATE}))""",
            "{{model}} v{{version}}"), unit="percentunit"),
        Panel("Tokens / s", q(
            f"sum by (model, direction) (rate(lifeguard_tokens_total{{{MV}}}{RATE}))",
            "{{model}} {{direction}}"), unit="short", width=8),
        Panel("Feedback events / s", q(
            f"sum by (model) (rate(lifeguard_feedback_events_total{{{M}}}{RATE}))",
            "{{model}}"), unit="reqps", width=8),
        Panel("Age of the newest event", q(
            f"max by (model) (lifeguard_last_event_age_seconds{{{M}}})", "{{model}}"), unit="s",
            width=8, description="LifeguardModelSilent fires above 15 minutes."),
    ]),
    ("Latency", [
        Panel("Inference latency", tuple(
            Query(" ".join(f"""histogram_quantile({p}, sum by (model, version, le)
                  (rate(lifeguard_inference_latency_seconds_bucket{{{MV}}}{RATE})))""".split()),
                  f"{{{{model}}}} v{{{{version}}}} p{round(p * 100)}")
            for p in (0.5, 0.95, 0.99)), unit="s"),
        Panel("Latency SLO misses (share over 1 s)", q(
            f"""1 - sum by (model)
            (rate(lifeguard_inference_latency_seconds_bucket{{{M}, {SLO_LE}}}{RATE}))
            / sum by (model) (rate(lifeguard_inference_latency_seconds_count{{{M}}}{RATE}))""",
            "{{model}}"), unit="percentunit",
              description="Error budget 1%: LifeguardLatencySLO*Burn fire at 6x and 14.4x."),
        Panel("Latency distribution", q(
            f"""sum by (le) (increase(lifeguard_inference_latency_seconds_bucket{{{MV}}}{RATE}))""",
            "{{le}}", fmt="heatmap"), "heatmap", unit="s",
              options={"calculate": False, "yAxis": {"unit": "s"},
                       "cellGap": 1, "color": {"mode": "scheme", "scheme": "Oranges"}}),
        Panel("Time to first token p95", q(
            f"""histogram_quantile(0.95, sum by (model, version, le)
            (rate(lifeguard_inference_ttft_seconds_bucket{{{MV}}}{RATE})))""",
            "{{model}} v{{version}}"), unit="s", description="Generators that report ttft_ms."),
    ]),
    ("Generation (causal-lm models)", [
        Panel("Time to first token p95 vs SLO", against_threshold(
            'detector="generation", metric="ttft_p95_ms"', "TTFT p95"), unit="ms", width=8,
              description="The generation detector on the daemon's window; "
              "LifeguardGenerationSlow fires after 30 minutes over the SLO."),
        Panel("Time per output token p95 vs SLO", against_threshold(
            'detector="generation", metric="tpot_p95_ms"', "TPOT p95"), unit="ms", width=8,
              description="(latency - TTFT) / (tokens_out - 1) per answer."),
        Panel("Truncated and empty answers", against_threshold(
            'detector="generation", metric=~"truncation_rate|empty_output_rate"',
            "{{metric}}"), unit="percentunit", width=8,
              description="finish_reason=length, and answers with no text; "
              "LifeguardAnswersCutOrEmpty fires after 30 minutes over the ceiling."),
        Panel("Reference score (ROUGE-L F1) vs the reference window", against_threshold(
            'detector="quality"', "{{metric}}"), unit="percentunit", width=12,
              description="Answers scored against the corrected references feedback brings; "
              "the threshold is the reference window's score minus tolerance and margin."),
        Panel("Mean rating vs the reference window", against_threshold(
            'detector="accuracy", metric=~"mean_rating.*"', "{{metric}}"), unit="percentunit",
              width=12, description="Ratings in [0, 1] (thumbs up/down are 1/0)."),
    ]),
    ("Detectors and windows", [
        Panel("Detector statistic and threshold", (
            Query(f"lifeguard_detector_statistic{{{MV}}}",
                  "{{model}} v{{version}} {{detector}}.{{metric}} {{column}}"),
            Query(f"lifeguard_detector_threshold{{{MV}}}",
                  "threshold {{model}} v{{version}} {{detector}}.{{metric}} {{column}}")),
              width=24),
        Panel("Detector verdicts (1 = breached)", q(
            f"""max by (model, version, detector, metric, column, segment)
            (lifeguard_detector_breached{{{MV}}})""", instant=True, fmt="table"), "table",
              width=12),
        Panel("Evaluations by outcome", q(
            f"sum by (model, outcome) (increase(lifeguard_evaluations_total{{{M}}}{RATE}))",
            "{{model}} {{outcome}}"), stack=True, width=6),
        Panel("Evaluation duration p95", q(
            f"""histogram_quantile(0.95, sum by (model, le)
            (rate(lifeguard_evaluation_duration_seconds_bucket{{{M}}}{RATE})))""", "{{model}}"),
              unit="s", width=6),
        Panel("Window sizes", (
            Query(f"sum by (model, version) (lifeguard_window_events{{{MV}}})",
                  "current {{model}} v{{version}}"),
            Query(f"sum by (model, version) (lifeguard_reference_events{{{MV}}})",
                  "reference {{model}} v{{version}}")), width=8),
        Panel("Label join / s", tuple(
            Query(f"sum by (model) (rate(lifeguard_labels_{what}_total{{{M}}}{RATE}))",
                  f"{what} {{{{model}}}}")
            for what in ("joined", "expired", "orphaned")), unit="reqps", width=8,
              description="Feedback joined to its inference by request_id; expired: no label "
              "within the TTL; orphaned: feedback whose inference never came."),
        Panel("Join buffers", q(
            f"sum by (model, buffer) (lifeguard_labels_pending{{{M}}})",
            "{{model}} {{buffer}}"), width=8),
        Panel("Rows judged at the last evaluation", q(
            f"max by (model, version, window) (lifeguard_detector_samples{{{MV}}})",
            "{{model}} v{{version}} {{window}}"), width=8,
              description="The most rows any detector saw, per window (labels can be fewer)."),
        Panel("Age of the data last evaluated", q(
            f"time() - max by (model, version) "
            f"(lifeguard_last_evaluation_timestamp_seconds{{{MV}}})",
            "{{model}} v{{version}}"), unit="s", width=8,
              description="Event time of the newest row in the last evaluated window."),
        Panel("Dropped at the memory caps / s", (
            Query(f"sum by (model, buffer) (rate(lifeguard_labels_dropped_total{{{M}}}{RATE}))",
                  "join {{model}} {{buffer}}"),
            Query(f"sum(rate(lifeguard_untracked_events_total{RATE}))", "untracked models"),
            Query(f"sum by (model) (rate(lifeguard_window_evicted_events_total{{{M}}}{RATE}))",
                  "evicted from window {{model}}")), unit="reqps", width=8,
              description="Memory is bounded by configuration: what the caps push out is "
              "counted here. Window evictions are normal; join drops and untracked events are "
              "not."),
    ]),
    ("Serving fleet (reference replicas)", [
        Panel("Version served, per replica", q(
            f"max by (instance, model) (lifeguard_replica_model_version{{{M}}})",
            "{{model}} @ {{instance}}"), width=8,
              description="A canary shows as one replica on the new version; a promotion as "
              "all of them; a rollback as the canary going back."),
        Panel("Replica requests / s", q(
            f"""sum by (model, version, status)
            (rate(lifeguard_replica_requests_total{{{M}}}{RATE}))""",
            "{{model}} v{{version}} {{status}}"), unit="reqps", stack=True, width=8),
        Panel("Replica latency p95", q(
            f"""histogram_quantile(0.95, sum by (model, le)
            (rate(lifeguard_replica_request_seconds_bucket{{{M}}}{RATE})))""", "{{model}}"),
              unit="s", width=8),
        Panel("Mean micro-batch size", q(
            f"""sum by (instance) (rate(lifeguard_replica_batch_size_sum{RATE}))
            / sum by (instance) (rate(lifeguard_replica_batch_size_count{RATE}))""",
            "{{instance}}"), width=12),
        Panel("Replica event log / s", q(
            f"sum by (outcome) (rate(lifeguard_replica_events_total{RATE}))", "{{outcome}}"),
              unit="reqps", stack=True, width=12,
              description="dropped / failed: inference events that never reached Kafka."),
    ]),
    ("Ingest", [
        Panel("Consumer lag", q(
            "sum by (topic, partition) (lifeguard_consumer_lag_messages)",
            "{{topic}}/{{partition}}"), width=8),
        Panel("Dead letters / s by reason", q(
            f"sum by (reason) (rate(lifeguard_dead_lettered_messages_total{RATE}))", "{{reason}}"),
              unit="reqps", stack=True, width=8),
        Panel("Offset commits / s", q(
            f"sum by (result) (rate(lifeguard_offset_commits_total{RATE}))", "{{result}}"),
              unit="reqps", width=8),
        Panel("Consumer errors", q(
            f"sum by (instance, kind) (increase(lifeguard_consumer_errors_total{RATE}))",
            "{{instance}} {{kind}}"), width=8, description="Recovered errors in the consumer "
              "loop (LifeguardConsumerErrors over 5 in 10 minutes)."),
        Panel("Batches and replayed events / s", (
            Query(f"sum by (instance) (rate(lifeguard_ingest_batches_total{RATE}))",
                  "batches {{instance}}"),
            Query(f"sum by (topic) (rate(lifeguard_replayed_events_total{RATE}))",
                  "replayed {{topic}}")), unit="reqps", width=8),
        Panel("Partitions owned by instance", q(
            "sum by (instance) (lifeguard_assigned_partitions)", "{{instance}}"), width=8),
    ]),
]


def variable(name: str, label: str, query: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE,
            "query": query, "definition": query,
            "refresh": 2, "sort": 1, "multi": True, "includeAll": True, "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, **extra}


def panel_json(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    targets = []
    for i, query in enumerate(panel.queries):
        target: dict[str, Any] = {"datasource": DATASOURCE, "refId": chr(ord("A") + i),
                                  "expr": query.expr, "legendFormat": query.legend or "__auto",
                                  "range": not query.instant, "instant": query.instant}
        if query.fmt != "time_series":
            target["format"] = query.fmt
        targets.append(target)
    custom: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if panel.kind == "timeseries":
        custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                  "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"}}
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    elif panel.kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "value", "graphMode": "none", "textMode": "auto"}
    elif panel.kind == "table":
        options = {"showHeader": True, "sortBy": [{"displayName": "Value", "desc": True}]}
    out: dict[str, Any] = {
        "id": pid, "type": panel.kind, "title": panel.title, "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit, "custom": custom}, "overrides": []},
        "options": {**options, **panel.options}, "targets": targets,
    }
    if panel.description:
        out["description"] = panel.description
    if panel.kind == "table":
        out["transformations"] = [{"id": "organize", "options": {
            "excludeByName": {"Time": True}, "indexByName": {}, "renameByName": {}}}]
    return out


def build() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid = 0
    y = 0
    for title, row in ROWS:
        pid += 1
        panels.append({"id": pid, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        y += 1
        x = 0
        line_height = 0
        for panel in row:
            if x + panel.width > 24:  # wrap to the next line of the grid
                x, y, line_height = 0, y + line_height, 0
            pid += 1
            panels.append(panel_json(panel, pid, x, y))
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return {
        "title": "lifeguard",
        "uid": "lifeguard-overview",
        "description": "lifeguard: ingest, latency, detectors, the label join and the serving "
                       "fleet, per model and version. Generated by ops/grafana/dashboard.py.",
        "tags": ["lifeguard", "mlops"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "links": [],
        "annotations": {"list": [
            {"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
             "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
             "name": "Annotations & Alerts", "type": "dashboard"},
            {"name": "lifeguard alerts", "datasource": DATASOURCE, "enable": True,
             "iconColor": "red", "expr": 'ALERTS{alertname=~"Lifeguard.*", '
             f'alertstate="firing", {M}}}', "step": "60s",
             "titleFormat": "{{alertname}}", "textFormat": "{{model}} {{pipeline}}",
             "useValueForTime": False},
            {"name": "served version changes", "datasource": DATASOURCE, "enable": True,
             "iconColor": "blue", "expr": "changes(lifeguard_replica_model_version"
             f"{{{M}}}[2m]) > 0", "step": "60s", "titleFormat": "{{model}} version change",
             "textFormat": "{{instance}}", "useValueForTime": False},
        ]},
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource",
             "query": "prometheus", "refresh": 1, "current": {}, "hide": 0},
            variable("model", "Model", "label_values(lifeguard_events_total, model)"),
            variable("version", "Version",
                     'label_values(lifeguard_events_total{model=~"$model"}, version)'),
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    sys.stdout.write(f"wrote {OUT}\n")
