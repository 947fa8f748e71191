"""Kafka ingest: a consumer-group consumer on its own thread, at-least-once.

Per poll: sort every message into a valid event or a dead letter (daemon.ingest.triage), apply
the valid ones to the sink (daemon.ingest.apply), deliver the dead letters, and only then
commit (daemon.ingest.offsets). A failed commit is retried on the next loop. A dead letter that
cannot be delivered holds its partition back, paused and committed only up to it
(daemon.ingest.dead_letter_holds): nothing is dropped, nothing applied twice. Partitions
newly assigned are replayed from before their committed offset (daemon.ingest.replay); who
owns which partition is daemon.ingest.ownership.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from daemon.ingest.admission import Admission
from daemon.ingest.apply import apply_batch
from daemon.ingest.batch import EventSink, PartitionBatch, TopicPartitionId
from daemon.ingest.broker import admin_options
from daemon.ingest.config import KafkaConfig
from daemon.ingest.dead_letter import Blocked, DeadLetter, DeadLetterBackoff, DeadLetterSender
from daemon.ingest.dead_letter_holds import DeadLetterHolds
from daemon.ingest.limits import FieldLimits
from daemon.ingest.metrics import IngestMetrics
from daemon.ingest.offsets import OffsetTracker
from daemon.ingest.ownership import key_in_assignment, read_partition_counts, rebalance_listener
from daemon.ingest.replay import Replay
from daemon.ingest.triage import RecordTriage

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.consumer.fetcher import ConsumerRecord
    from kafka.structs import TopicPartition

log = logging.getLogger(__name__)

LAG_EVERY_S = 1.0


class Ingestor:
    """Owns one KafkaConsumer and the thread that polls it.

    ``stop()`` ends polling after the batch in flight has been applied and committed.
    """

    def __init__(self, config: KafkaConfig, bootstrap: list[str], sink: EventSink,
                 metrics: IngestMetrics, configured_models: Sequence[str] = ()) -> None:
        self.config = config
        # Before any sink: a label a producer chooses must not grow metrics or memory.
        self.admission = Admission(configured_models, config.max_models, config.max_versions,
                                   config.version_idle)
        self.limits = FieldLimits(config.max_text_bytes, config.max_id_bytes,
                                  config.max_input_fields,
                                  lambda field: metrics.truncated.labels(field).inc())
        self.bootstrap = bootstrap
        self.sink = sink
        self.metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: KafkaConsumer | None = None
        self._triage = RecordTriage(config.max_message_bytes, config.max_event_skew,
                                    self.admission, self.limits, metrics)
        self._offsets = OffsetTracker(metrics)
        self._replay = Replay(config.replay_messages, metrics)
        # The sender builds its producer on first use, on the ingest thread.
        sender = DeadLetterSender(self._make_producer, config.dead_letter_topic,
                                  self._max_request_bytes())
        backoff = DeadLetterBackoff(config.dead_letter_retries, config.dead_letter_backoff,
                                    config.dead_letter_max_backoff)
        self._holds = DeadLetterHolds(sender, backoff, self._offsets, metrics)
        self._last_lag = 0.0
        self.last_loop = 0.0  # monotonic time of the last completed loop, for health
        self.assignment: frozenset[TopicPartitionId] = frozenset()
        self.joined = False  # set once the group has assigned partitions at least once
        self.partition_counts: dict[str, int] = {}  # topic -> partitions, at the last rebalance
        self.error: BaseException | None = None

    # -- lifetime ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lifeguard-ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._consumer = self._make_consumer()
            while not self._stop.is_set():
                self._poll_once()
                self.last_loop = time.monotonic()
        except BaseException as exc:  # surfaced through health; the supervisor exits non-zero
            self.error = exc
            log.exception("ingest stopped on an unexpected error")
        finally:
            self._shutdown()

    def _make_consumer(self) -> KafkaConsumer:
        from kafka import KafkaConsumer

        c = self.config
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=c.group_id,
            client_id=c.client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=c.max_batch,
            session_timeout_ms=c.session_timeout_ms,
            heartbeat_interval_ms=c.heartbeat_interval_ms,
            max_partition_fetch_bytes=max(1 << 20, c.max_message_bytes + 4096),
            fetch_max_bytes=max(50 << 20, c.max_message_bytes + 4096),
            reconnect_backoff_max_ms=2000,
            **c.client_options,
        )
        consumer.subscribe(c.topics, listener=rebalance_listener(self))
        return consumer

    def _make_producer(self) -> KafkaProducer:
        from kafka import KafkaProducer

        options = {k: v for k, v in admin_options(self.config.client_options).items()
                   if k != "client_id"}
        # max_block_ms: a topic whose metadata never comes must fail the send, not the loop.
        return KafkaProducer(bootstrap_servers=self.bootstrap, client_id=self.config.client_id,
                             acks="all", linger_ms=5, retries=5, max_block_ms=5000,
                             request_timeout_ms=10_000,
                             max_request_size=self._max_request_bytes(), **options)

    def _max_request_bytes(self) -> int:
        return max(1 << 20, self.config.max_message_bytes * 2)

    def paused_partitions(self) -> dict[TopicPartitionId, Blocked]:
        """Partitions held back because the dead-letter topic refuses their records."""
        return self._holds.paused()

    def _shutdown(self) -> None:
        consumer = self._consumer
        if consumer is not None:
            try:
                self._offsets.commit(consumer)
            except Exception:
                log.warning("final commit failed; at most the last batch will be re-read")
            try:
                consumer.close(autocommit=False)
            except Exception:
                log.debug("consumer close failed", exc_info=True)
        self._holds.close()

    # -- the loop ---------------------------------------------------------------------------

    def _poll_once(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        self._holds.retry_due(consumer)
        try:
            records = consumer.poll(timeout_ms=self.config.poll_timeout_ms,
                                    max_records=self.config.max_batch)
        except Exception as exc:
            # kafka-python recovers connections itself; an error here is transient.
            self.metrics.consumer_errors.labels(type(exc).__name__).inc()
            log.warning("poll failed (%s); retrying", exc)
            time.sleep(0.5)
            return
        if self._replay.requested:
            self._replay.seek_back(consumer, records)
        if records:
            self.metrics.batches.inc()
            self._process(consumer, records)
        self._offsets.commit(consumer)
        now = time.monotonic()
        if now - self._last_lag >= LAG_EVERY_S:
            self._last_lag = now
            self._offsets.update_lag(consumer)

    def _process(self, consumer: KafkaConsumer,
                 records: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        now = time.monotonic()
        wall = time.time()
        dead: dict[TopicPartition, list[DeadLetter]] = {}
        for tp, messages in records.items():
            if self._holds.holds(tp):
                # Fetched before the pause took effect: read again once the partition resumes.
                consumer.seek(tp, messages[0].offset)
                continue
            replay_until = self._replay.boundary(tp)
            triaged = self._triage.sort((tp.topic, tp.partition), messages, replay_until,
                                        now, wall)
            letters = dead[tp] = triaged.dead
            first, last = messages[0].offset, messages[-1].offset
            if triaged.replayed:
                apply_batch(self.sink, PartitionBatch(
                    tp.topic, tp.partition, triaged.replayed, first,
                    min(last, replay_until - 1), replay=True), [], letters)
            if triaged.fresh:
                apply_batch(self.sink, PartitionBatch(
                    tp.topic, tp.partition, triaged.fresh, max(first, replay_until), last),
                    triaged.fresh_records, letters)
            self._replay.read_through(tp, last)
            self._offsets.read_through(tp, last)
        for model, version in self.admission.take_retired():
            self.metrics.forget_version(model, version)
        for tp, letters in dead.items():
            letters.sort(key=lambda letter: letter.record.offset)
            self._holds.settle(consumer, tp, letters)
        self._offsets.commit(consumer)

    # -- rebalances (called by kafka-python inside poll()) ----------------------------------

    def on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._offsets.commit(self._consumer)
        ids = [(tp.topic, tp.partition) for tp in revoked]
        for tp in revoked:
            self._offsets.forget(tp)
            self._holds.forget(tp)
            self._replay.forget(tp)
        self.sink.release(ids)
        self.admission.release(ids)
        self.metrics.forget_partitions(ids)
        self._holds.report()
        self._set_assignment()

    def on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        self._replay.request(assigned)
        self.joined = True
        self._set_assignment()

    def _set_assignment(self) -> None:
        consumer = self._consumer
        parts = consumer.assignment() if consumer is not None else set()
        self.assignment = frozenset((tp.topic, tp.partition) for tp in parts)
        self.metrics.assigned.set(len(self.assignment))
        if consumer is not None:  # a metadata hiccup keeps what was known
            self.partition_counts = {**self.partition_counts,
                                     **read_partition_counts(consumer, self.config.topics)}

    def owns_key(self, key: str) -> bool:
        """Whether this instance is assigned the partition a message keyed ``key`` goes to
        (kafka-python's default partitioner: murmur2 of the key), on any consumed topic."""
        return key_in_assignment(key, self.assignment, self.partition_counts)
