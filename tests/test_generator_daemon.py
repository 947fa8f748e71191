"""Chat traffic through the real daemon (in-process, on the project's broker): a stationary
generator fires nothing, and a generator whose answers go wrong is caught by the generator's
own detectors (answer drift, mean rating, reference score), while its prompts stay put."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
from procs import wait_until

from daemon.app import Daemon
from daemon.config import parse_config
from daemon.ingest.broker import LocalBroker, ensure_topics
from daemon.monitor.evaluation import Evaluation
from harness.traffic import make_producer

pytestmark = pytest.mark.integration
TOPIC = "generator-e2e"
WINDOW = 400
FEEDBACK_DELAY = 20  # feedback arrives this many requests after its inference
PRODUCTS = ("router", "modem", "repeater", "switch", "cable", "adapter")
ISSUES = ("blinks red", "drops wifi", "will not boot", "is slow", "reboots at night",
          "lost its password", "gets hot", "shows no signal")
STEPS = ("hold the reset pin for ten seconds", "update the firmware from the app",
         "move it away from the microwave", "check the cable into the wall socket",
         "restart it and wait two minutes", "call us with the serial number")
# After the shift the model answers about another product line, in words it never used.
WRONG = ("our premium blender plan covers kitchen appliances",
         "please rate your smoothie experience in the survey",
         "the dishwasher warranty excludes glassware damage")


class ChatStream:
    """Seeded support chats for one model: prompts, answers, TTFT and tokens, and late
    feedback (half rated, a quarter corrected with a reference)."""

    def __init__(self, model: str, seed: int) -> None:
        self.model = model
        self.rng = random.Random(seed)
        self.i = 0
        self.pending: list[tuple[int, dict]] = []
        self.t0 = int(time.time() * 1000)

    def events(self, n: int, *, broken: bool = False) -> list[dict]:
        out: list[dict] = []
        rng = self.rng
        for _ in range(n):
            i = self.i
            self.i += 1
            rid = f"{self.model}-{i}"
            product, issue = rng.choice(PRODUCTS), rng.choice(ISSUES)
            reference = f"for a {product} that {issue} {rng.choice(STEPS)}"
            words = reference.split()
            answer = (rng.choice(WRONG) if broken else
                      " ".join(w for w in words if rng.random() < 0.9))
            tokens = len(answer.split()) + 1
            ttft = rng.gammavariate(8.0, 10.0)
            ts = self.t0 + i * 50
            cut = rng.random() < 0.03
            out.append({
                "schema": "inference/v1", "request_id": rid, "ts": ts, "model": self.model,
                "model_version": "1", "latency_ms": ttft + tokens * rng.gammavariate(8, 2.5),
                "ttft_ms": ttft, "tokens_in": 12, "tokens_out": tokens,
                "params": {"temperature": 0.3, "max_tokens": 64},
                "input": {"messages": [
                    {"role": "system", "content": "You are the support assistant."},
                    {"role": "user", "content": f"my {product} {issue}"}]},
                "output": {"text": answer, "finish_reason": "length" if cut else "stop"}})
            good = rng.random() < (0.3 if broken else 0.85)
            if i % 4 == 0:
                feedback: dict = {"reference": reference}
            elif i % 4 == 1:
                feedback = {"rating": "up" if good else "down"}
            elif i % 4 == 2:
                feedback = {"rating": good}
            else:
                feedback = {}
            if feedback:
                self.pending.append((i + FEEDBACK_DELAY, {
                    "schema": "feedback/v1", "request_id": rid, "model": self.model,
                    "ts": ts + FEEDBACK_DELAY * 50, **feedback}))
            while self.pending and self.pending[0][0] <= i:
                out.append(self.pending.pop(0)[1])
        return out


def _send(bootstrap: str, events: list[dict]) -> None:
    producer = make_producer(bootstrap)
    for event in events:
        producer.send(TOPIC, key=event["model"].encode(), value=json.dumps(event).encode())
    producer.flush(60)
    producer.close()


def _model(name: str) -> dict:
    return {"name": name, "task": "causal-lm", "window": {"size": WINDOW},
            "reference": {"first_n": WINDOW},
            "evaluation": {"interval": 3600, "every_events": WINDOW, "min_events": WINDOW,
                           "embedding_sample": 0},
            "detectors": {"accuracy": {"min_labels": 100},
                          "quality": {"min_references": 60}}}


def test_chat_traffic_stationary_fires_nothing_and_broken_answers_are_caught(
        broker: LocalBroker, tmp_path: Path) -> None:
    ensure_topics(broker.bootstrap, {TOPIC: 1, f"{TOPIC}.dlq": 1})
    daemon = Daemon(parse_config({
        "kafka": {"bootstrap_servers": [broker.bootstrap], "topics": [TOPIC],
                  "group_id": "generator-e2e", "dead_letter_topic": f"{TOPIC}.dlq",
                  "session_timeout_ms": 6000, "heartbeat_interval_ms": 1000},
        "api": {"port": 0}, "state": {"path": str(tmp_path / "state.db")},
        "models": [_model("steady"), _model("drifting")]}))
    evaluations: dict[str, Evaluation] = {}
    daemon.monitoring.evaluator.sinks.append(lambda e: evaluations.setdefault(e.id, e))

    def of(model: str) -> list[Evaluation]:
        return [e for e in list(evaluations.values()) if e.model == model]

    streams = {"steady": ChatStream("steady", 1), "drifting": ChatStream("drifting", 2)}

    def window(broken: bool = False) -> None:
        """One window's worth of chats per model, then wait for that window's evaluation
        (a burst would be evaluated once, at its end: passes never overlap)."""
        seen = {m: len(of(m)) for m in streams}
        _send(broker.bootstrap, [e for m, s in streams.items()
                                 for e in s.events(WINDOW, broken=broken and m == "drifting")])
        wait_until(lambda: all(len(of(m)) > n for m, n in seen.items()), 60,
                   what="the window's evaluation")

    daemon.start()
    try:
        for _ in range(6):
            window()
        before = [r.key for e in of("drifting") for r in e.breaches]
        assert before == [], before
        for _ in range(3):
            window(broken=True)
            if any(e.breached for e in of("drifting")):
                break
        fired = {r.key for e in of("drifting") for r in e.breaches}
        assert {"accuracy.mean_rating_vs_reference",
                "quality.reference_score_vs_reference"} <= fired, fired
        assert any(k.startswith("drift.") and "[output_text]" in k for k in fired), fired
        assert not any("[input_text]" in k for k in fired), fired  # the prompts did not move
        assert not any(k.startswith("generation.") for k in fired), fired  # nor the speed

        steady = of("steady")
        assert len(steady) >= 7
        steady_results = [r for e in steady for r in e.results]
        assert [r.key for r in steady_results if r.breached] == []
        decided = {r.key for r in steady_results if r.statistic is not None}
        assert {"generation.ttft_p95_ms", "generation.tpot_p95_ms",
                "generation.truncation_rate", "accuracy.mean_rating_vs_reference",
                "quality.reference_score_vs_reference", "drift.oov[output_text]"} <= decided
    finally:
        daemon.stop()
