"""Where planned requests go: to serving replicas over HTTP (they log the InferenceEvent), or
straight to Kafka as InferenceEvents answered by a synthetic model of configurable accuracy.
Also the Kafka side of labels: FeedbackEvents, key = model name."""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import Field

from daemon.events import FeedbackEvent, InferenceEvent, Output, encode
from lifeguard.config import StrictModel
from simulator.corpus import BASE_DOMAIN, LABELS
from simulator.errors import RequestFailedError

if TYPE_CHECKING:
    from kafka import KafkaProducer

    from simulator.scenarios import PlannedRequest
    from simulator.stats import LiveStats

TEXT_PATH = "/v2/models/{model}/text"  # deploy.replica's plain-text endpoint
REQUEST_ID_HEADER = "x-request-id"


class SyntheticModel(StrictModel):
    """Direct mode's stand-in for a served model: right with ``accuracy[domain]`` (or
    ``default_accuracy`` for domains it was not trained on); from ``recover_at_s`` on, version
    ``recovered_version`` answers the new concept with ``recovered_accuracy``."""

    accuracy: dict[str, float] = Field(default_factory=lambda: {BASE_DOMAIN: 0.92})
    default_accuracy: float = Field(default=0.6, ge=0, le=1)
    version: str = Field(default="1", min_length=1)
    recover_at_s: float | None = Field(default=None, ge=0)
    recovered_version: str = Field(default="2", min_length=1)
    recovered_accuracy: float = Field(default=0.92, ge=0, le=1)
    error_rate: float = Field(default=0.0, ge=0, le=1,
                              description="share answered status=error")
    replicas: int = Field(default=3, ge=1,
                          description="replica names written in events: sim-0..")


class DirectConfig(StrictModel):
    """Write InferenceEvents straight to Kafka (no model, no replicas)."""

    mode: Literal["direct"] = "direct"
    kafka: str = Field(min_length=1, description="bootstrap servers HOST:PORT[,HOST:PORT]")
    topic: str = Field(default="inference", min_length=1)
    model: SyntheticModel = Field(default_factory=SyntheticModel)
    connect_timeout_s: float = Field(default=10.0, gt=0,
                                     description="give up on the broker after")


class ReplicaConfig(StrictModel):
    """Send each request to a replica's text endpoint, round-robin; ``kafka`` (optional) is
    where the labels go — the replicas write the InferenceEvents themselves."""

    mode: Literal["replica"] = "replica"
    urls: list[str] = Field(min_length=1)
    kafka: str | None = None
    topic: str = Field(default="inference", min_length=1,
                       description="where feedback goes")
    concurrency: int = Field(default=32, ge=1, description="requests in flight at most")
    timeout_s: float = Field(default=10.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0,
                                     description="give up on the broker after")


DriverConfig = DirectConfig | ReplicaConfig


@dataclass(frozen=True)
class Answer:
    label: str
    version: str
    latency_ms: float


class Driver(Protocol):
    """Sends one planned request and returns what the model answered."""

    async def open(self) -> None: ...

    async def send(self, request: PlannedRequest) -> Answer: ...

    async def close(self) -> None: ...


DELIVERY_TIMEOUT_MS = 5_000  # a record not acknowledged by then fails (and is counted)


def make_producer(bootstrap: str, connect_timeout_s: float = 10.0) -> KafkaProducer:
    from kafka import KafkaProducer

    # A bounded delivery time, so that flushing at close ends even when the broker went away
    # first; kafka-python's default (two minutes) outlived every Ctrl-C.
    return KafkaProducer(bootstrap_servers=bootstrap.split(","), linger_ms=5, acks=1,
                         retries=5, max_block_ms=10_000, request_timeout_ms=3_000,
                         delivery_timeout_ms=DELIVERY_TIMEOUT_MS,
                         bootstrap_timeout_ms=int(connect_timeout_s * 1000))


def close_producer(producer: KafkaProducer, timeout_s: float) -> bool:
    """Flush for at most ``timeout_s``, then close. False when records were still pending: they
    fail through their errbacks, which count them as dropped. Closing here also drops
    kafka-python's atexit hook, which would otherwise block on a dead broker at exit."""
    from kafka.errors import KafkaTimeoutError

    try:
        producer.flush(timeout=timeout_s)
        producer.close(timeout=1.0)
        return True
    except KafkaTimeoutError:
        with contextlib.suppress(KafkaTimeoutError):
            producer.close(timeout=0)
        return False


class DirectDriver:
    """InferenceEvents to Kafka; the answer is the synthetic model's, deterministic per request.
    A send the broker later rejects is counted as a failure by the producer's callback."""

    def __init__(self, config: DirectConfig, producer: KafkaProducer, model_name: str,
                 seed: int, stats: LiveStats) -> None:
        self.config = config
        self.producer = producer
        self.model_name = model_name
        self.seed = seed
        self.stats = stats

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _predict(self, request: PlannedRequest) -> tuple[str, float, str, bool]:
        """(label, score, version, failed) of the synthetic model for this request."""
        spec = self.config.model
        rng = random.Random(f"{self.seed}:{request.index}:model")
        recovered = spec.recover_at_s is not None and request.offset_s >= spec.recover_at_s
        if recovered:
            version, accuracy, concept = spec.recovered_version, spec.recovered_accuracy, \
                request.truth
        else:
            version, concept = spec.version, request.model_label
            accuracy = spec.accuracy.get(request.review.domain, spec.default_accuracy)
        right = rng.random() < accuracy
        label = concept if right else LABELS[1 - LABELS.index(concept)]
        score = round(0.5 + 0.49 * rng.random(), 4)  # no calibration is simulated
        return label, score, version, rng.random() < spec.error_rate

    async def send(self, request: PlannedRequest) -> Answer:
        label, score, version, failed = self._predict(request)
        event = InferenceEvent(
            request_id=request.request_id, ts=time.time() * 1000, model=self.model_name,
            model_version=version, latency_ms=request.latency_ms,
            replica=f"sim-{request.index % self.config.model.replicas}",
            tokens_in=len(request.text.split()), tokens_out=1,
            status="error" if failed else "ok", error="synthetic failure" if failed else None,
            input={"text": request.text},
            output=None if failed else Output(label=label, score=score))
        future = self.producer.send(self.config.topic, key=self.model_name.encode(),
                                    value=encode(event))
        future.add_errback(lambda exc: self.stats.count("deliveries_failed"))
        if failed:
            raise RequestFailedError("model_error")
        return Answer(label, version, request.latency_ms)


class ReplicaDriver:
    """POST each text to a replica (round-robin by request index) with the simulator's request
    id, so the replica's InferenceEvent and the simulator's FeedbackEvent share it."""

    def __init__(self, config: ReplicaConfig, model_name: str) -> None:
        self.config = config
        self.model_name = model_name
        self.urls = [u.rstrip("/") for u in config.urls]
        self._client: Any = None

    async def open(self) -> None:
        import httpx

        limits = httpx.Limits(max_connections=self.config.concurrency,
                              max_keepalive_connections=self.config.concurrency)
        self._client = httpx.AsyncClient(timeout=self.config.timeout_s, limits=limits)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(self, request: PlannedRequest) -> Answer:
        import httpx

        url = self.urls[request.index % len(self.urls)]
        started = time.perf_counter()
        try:
            response = await self._client.post(
                url + TEXT_PATH.format(model=self.model_name),
                json={"text": request.text, "request_id": request.request_id},
                headers={REQUEST_ID_HEADER: request.request_id})
        except httpx.HTTPError as exc:
            raise RequestFailedError(f"{type(exc).__name__} @ {url}") from None
        latency_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RequestFailedError(f"http_{response.status_code} @ {url}")
        try:
            body = response.json()
        except ValueError:
            raise RequestFailedError(f"bad_json @ {url}") from None
        if body.get("request_id") != request.request_id:
            raise RequestFailedError(f"request_id_mismatch @ {url}")
        if body.get("label") is None:
            raise RequestFailedError(f"no_label @ {url}")
        return Answer(str(body["label"]), str(body.get("model_version")), latency_ms)


class KafkaFeedback:
    """FeedbackEvents (feedback/v1, key = model name) to one topic; delivery errors counted."""

    def __init__(self, producer: KafkaProducer, topic: str, model_name: str,
                 stats: LiveStats) -> None:
        self.producer = producer
        self.topic = topic
        self.model_name = model_name
        self.stats = stats

    def send(self, request_id: str, label: str) -> None:
        event = FeedbackEvent(request_id=request_id, ts=time.time() * 1000,
                              model=self.model_name, label=label)
        future = self.producer.send(self.topic, key=self.model_name.encode(),
                                    value=encode(event))
        future.add_callback(lambda _meta: self.stats.count("labels_sent"))
        future.add_errback(lambda _exc: self.stats.count("labels_failed"))
