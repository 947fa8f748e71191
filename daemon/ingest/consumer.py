"""Kafka ingest: a consumer-group consumer on its own thread, at-least-once.

Per poll: decode and validate every message, dead-letter the invalid ones (reason and source
in headers), apply the valid ones to the sink, and only then commit. A failed commit is retried
on the next loop; a failed dead-letter send rewinds the partition, so nothing is ever dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from daemon.events import Event, EventError, decode
from daemon.ingest.batch import EventSink, PartitionBatch, TopicPartitionId
from daemon.ingest.config import KafkaConfig
from daemon.ingest.metrics import IngestMetrics

if TYPE_CHECKING:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.consumer.fetcher import ConsumerRecord
    from kafka.structs import TopicPartition

log = logging.getLogger(__name__)

LAG_EVERY_S = 1.0


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: ConsumerRecord
    reason: str
    detail: str


class Ingestor:
    """Owns one KafkaConsumer and the thread that polls it.

    ``stop()`` ends polling after the batch in flight has been applied and committed.
    """

    def __init__(self, config: KafkaConfig, bootstrap: list[str], sink: EventSink,
                 metrics: IngestMetrics) -> None:
        self.config = config
        self.bootstrap = bootstrap
        self.sink = sink
        self.metrics = metrics
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        # Offsets applied but not yet committed (commit failed): retried every loop.
        self._pending: dict[TopicPartition, int] = {}
        # Partition -> offset below which messages are replays of committed history.
        self._replay_until: dict[TopicPartition, int] = {}
        self._last_lag = 0.0
        self._next_offset: dict[TopicPartition, int] = {}
        self._needs_replay: set[TopicPartition] = set()
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
            self._producer = self._make_producer()
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
        consumer.subscribe(c.topics, listener=_listener(self))
        return consumer

    def _make_producer(self) -> KafkaProducer:
        from kafka import KafkaProducer

        options = {k: v for k, v in self.config.client_options.items()
                   if k.startswith(("security", "sasl", "ssl"))}
        return KafkaProducer(bootstrap_servers=self.bootstrap, client_id=self.config.client_id,
                             acks="all", linger_ms=5, retries=5,
                             max_request_size=max(1 << 20, self.config.max_message_bytes * 2),
                             **options)

    def _shutdown(self) -> None:
        consumer = self._consumer
        if consumer is not None:
            try:
                self._commit_pending()
            except Exception:
                log.warning("final commit failed; at most the last batch will be re-read")
            try:
                consumer.close(autocommit=False)
            except Exception:
                log.debug("consumer close failed", exc_info=True)
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except Exception:
                log.debug("producer close failed", exc_info=True)

    # -- the loop ---------------------------------------------------------------------------

    def _poll_once(self) -> None:
        assert self._consumer is not None
        try:
            records = self._consumer.poll(timeout_ms=self.config.poll_timeout_ms,
                                          max_records=self.config.max_batch)
        except Exception as exc:
            # kafka-python recovers connections itself; an error here is transient.
            self.metrics.consumer_errors.labels(type(exc).__name__).inc()
            log.warning("poll failed (%s); retrying", exc)
            time.sleep(0.5)
            return
        if self._needs_replay:
            self._start_replay(records)
        if records:
            self.metrics.batches.inc()
            self._process(records)
        if self._pending:
            self._commit_pending()
        now = time.monotonic()
        if now - self._last_lag >= LAG_EVERY_S:
            self._last_lag = now
            self._update_lag()

    def _process(self, records: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        limit = self.config.max_message_bytes
        dead: list[DeadLetter] = []
        for tp, messages in records.items():
            valid: list[Event] = []
            replayed: list[Event] = []
            replay_until = self._replay_until.get(tp, -1)
            for record in messages:
                try:
                    event = decode(record.value, limit)
                except EventError as exc:
                    if record.offset >= replay_until:
                        dead.append(DeadLetter(record, exc.reason, exc.detail))
                    continue
                (replayed if record.offset < replay_until else valid).append(event)
            first, last = messages[0].offset, messages[-1].offset
            if replayed:
                self._apply(PartitionBatch(tp.topic, tp.partition, replayed, first,
                                           min(last, replay_until - 1), replay=True), dead)
            if valid:
                self._apply(PartitionBatch(tp.topic, tp.partition, valid,
                                           max(first, replay_until), last), dead)
            if last + 1 >= replay_until:
                self._replay_until.pop(tp, None)
        if dead and not self._dead_letter(dead):
            # Nothing is committed past a message that is neither applied nor dead-lettered.
            for tp, messages in records.items():
                self._consumer.seek(tp, messages[0].offset)  # type: ignore[union-attr]
            return
        for tp, messages in records.items():
            self._pending[tp] = self._next_offset[tp] = messages[-1].offset + 1
        self._commit_pending()

    def _apply(self, batch: PartitionBatch, dead: list[DeadLetter]) -> None:
        try:
            self.sink.apply(batch)
        except Exception:
            log.exception("applying a batch failed; retrying its events one by one")
            self._apply_one_by_one(batch, dead)

    def _apply_one_by_one(self, batch: PartitionBatch, dead: list[DeadLetter]) -> None:
        # A poison event must neither wedge the partition nor vanish: it is dead-lettered.
        from kafka.consumer.fetcher import ConsumerRecord

        from daemon.events import encode

        for event in batch.events:
            single = PartitionBatch(batch.topic, batch.partition, [event], batch.first_offset,
                                    batch.last_offset, batch.replay)
            try:
                self.sink.apply(single)
            except Exception as exc:
                if batch.replay:
                    continue
                record = ConsumerRecord(batch.topic, batch.partition, -1, batch.first_offset,
                                        0, 0, event.model.encode(), encode(event), [], None,
                                        -1, -1, -1)
                dead.append(DeadLetter(record, "apply_error", f"{type(exc).__name__}: {exc}"))

    def _dead_letter(self, dead: list[DeadLetter]) -> bool:
        assert self._producer is not None
        futures = []
        try:
            for letter in dead:
                r = letter.record
                headers = [
                    ("lifeguard.reason", letter.reason.encode()),
                    ("lifeguard.error", letter.detail.encode()[:1000]),
                    ("lifeguard.source.topic", r.topic.encode()),
                    ("lifeguard.source.partition", str(r.partition).encode()),
                    ("lifeguard.source.offset", str(r.offset).encode()),
                ]
                futures.append(self._producer.send(self.config.dead_letter_topic, key=r.key,
                                                   value=r.value, headers=headers))
            self._producer.flush(timeout=10)
            for future in futures:
                future.get(timeout=10)
        except Exception as exc:
            self.metrics.consumer_errors.labels("dead_letter_" + type(exc).__name__).inc()
            log.warning("dead-letter send failed (%s); the batch will be re-read", exc)
            time.sleep(0.5)
            return False
        for letter in dead:
            self.metrics.dead_lettered.labels(letter.reason).inc()
        return True

    def _commit_pending(self) -> None:
        if not self._pending or self._consumer is None:
            return
        from kafka.structs import OffsetAndMetadata

        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in self._pending.items()}
        try:
            self._consumer.commit(offsets)
        except Exception as exc:
            self.metrics.commits.labels("failed").inc()
            log.warning("offset commit failed (%s); will retry", exc)
            return
        self.metrics.commits.labels("ok").inc()
        self._pending.clear()

    def _update_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        # From the high watermark the fetches carry: end_offsets is not reliable on every broker.
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            position = self._next_offset.get(tp)
            if highwater is not None and position is not None:
                lag = max(0, highwater - position)
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)

    # -- rebalances -------------------------------------------------------------------------

    def on_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self._commit_pending()
        ids = [(tp.topic, tp.partition) for tp in revoked]
        for tp in revoked:
            self._pending.pop(tp, None)
            self._needs_replay.discard(tp)
            self._replay_until.pop(tp, None)
            self._next_offset.pop(tp, None)
        self.sink.release(ids)
        self.metrics.forget_partitions(ids)
        self._set_assignment()

    def on_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        if self.config.replay_messages:
            # Seeking back needs the committed offset, a blocking call kafka-python refuses
            # inside this callback: it is done right after poll() returns.
            self._needs_replay.update(assigned)
        self.joined = True
        self._set_assignment()

    def _start_replay(self, records: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """Seek newly assigned partitions back ``replay_messages`` before their committed
        offset. Records this poll already fetched for them are set aside (not applied, not
        committed): the seek fetches them again, after the replayed history."""
        consumer = self._consumer
        assert consumer is not None
        depth = self.config.replay_messages or 0
        for tp in list(self._needs_replay):
            fetched = records.pop(tp, None)
            if tp not in consumer.assignment():
                continue
            committed = consumer.committed(tp)
            if committed:
                # By offset, not by time: offsets_for_times is not reliable on every broker.
                consumer.seek(tp, max(0, committed - depth))
                self._replay_until[tp] = committed
            elif fetched:
                consumer.seek(tp, fetched[0].offset)
        self._needs_replay.clear()

    def _set_assignment(self) -> None:
        consumer = self._consumer
        parts = consumer.assignment() if consumer is not None else set()
        self.assignment = frozenset((tp.topic, tp.partition) for tp in parts)
        self.metrics.assigned.set(len(self.assignment))
        if consumer is not None:
            counts = {}
            for topic in self.config.topics:
                try:  # from the metadata the group join just fetched
                    counts[topic] = len(consumer.partitions_for_topic(topic))
                except Exception:  # a metadata hiccup: keep what was known
                    log.warning("no partition count for %s", topic, exc_info=True)
            self.partition_counts = {**self.partition_counts,
                                     **{t: n for t, n in counts.items() if n > 0}}

    def owns_key(self, key: str) -> bool:
        """Whether this instance is assigned the partition a message keyed ``key`` goes to
        (kafka-python's default partitioner: murmur2 of the key), on any consumed topic."""
        assignment = self.assignment
        return any((topic, partition_of(key, n)) in assignment
                   for topic, n in self.partition_counts.items())


def partition_of(key: str, n_partitions: int) -> int:
    """The partition kafka-python's (and Java's) default partitioner picks for ``key``."""
    from kafka.partitioner.default import murmur2

    return (murmur2(key.encode()) & 0x7FFFFFFF) % n_partitions


def _listener(ingestor: Ingestor) -> Any:
    from kafka import ConsumerRebalanceListener

    class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
        """Forwards kafka-python's callbacks (they run inside poll()) to the Ingestor."""

        def on_partitions_revoked(self, revoked: Any) -> None:
            ingestor.on_revoked(list(revoked))

        def on_partitions_assigned(self, assigned: Any) -> None:
            ingestor.on_assigned(list(assigned))

    return Rebalance()
