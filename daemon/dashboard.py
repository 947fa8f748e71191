"""Terminal views of the daemon's own metrics (rich), for the demo and the on-call."""

from __future__ import annotations

import time
from collections import defaultdict

from prometheus_client import CollectorRegistry
from rich.table import Table


def quantile_from_buckets(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus-style histogram_quantile over cumulative (upper bound, count) pairs."""
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower
            width = count - below
            return lower + (bound - lower) * ((rank - below) / width if width else 0.0)
        lower, below = bound, count
    return lower


class IngestView:
    """Events/s, errors, latency quantiles and dead letters, from one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._last: dict[tuple[str, str], float] = {}
        self._last_t = time.monotonic()

    def render(self) -> Table:
        events: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
        buckets: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
        dead: dict[str, float] = {}
        lag = 0.0
        for family in self.registry.collect():
            for s in family.samples:
                if s.name == "lifeguard_events_total":
                    events[(s.labels["model"], s.labels["version"])][s.labels["status"]] = s.value
                elif s.name == "lifeguard_inference_latency_seconds_bucket":
                    key = (s.labels["model"], s.labels["version"])
                    buckets[key].append((float(s.labels["le"]), s.value))
                elif s.name == "lifeguard_dead_lettered_messages_total":
                    dead[s.labels["reason"]] = s.value
                elif s.name == "lifeguard_consumer_lag_messages":
                    lag += s.value
        now = time.monotonic()
        elapsed = max(1e-6, now - self._last_t)
        table = Table(title="lifeguard: ingested events", expand=False)
        for column in ("model", "version", "events", "events/s", "errors", "p50 ms", "p95 ms"):
            table.add_column(column, justify="left" if column in ("model", "version") else "right")
        for key in sorted(events):
            total = sum(events[key].values())
            rate = (total - self._last.get(key, total)) / elapsed
            self._last[key] = total
            ordered = sorted(buckets[key])
            table.add_row(key[0], key[1], f"{total:,.0f}", f"{rate:,.0f}",
                          f"{events[key].get('error', 0):,.0f}",
                          f"{quantile_from_buckets(ordered, 0.5) * 1000:.1f}",
                          f"{quantile_from_buckets(ordered, 0.95) * 1000:.1f}")
        self._last_t = now
        dead_text = ", ".join(f"{r}={n:.0f}" for r, n in sorted(dead.items())) or "none"
        table.caption = f"dead-lettered: {dead_text}   consumer lag: {lag:,.0f}"
        return table
