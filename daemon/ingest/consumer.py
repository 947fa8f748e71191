"""Kafka ingest: a consumer-group consumer on its own thread, at-least-once.

Per poll: decode and validate every message, apply the valid ones to the sink, dead-letter the
rest (daemon.ingest.dead_letter), and only then commit. A failed commit is retried on the next
loop. A dead letter that cannot be delivered is kept and retried with backoff while its
partition is paused and committed only up to it: nothing is dropped, nothing applied twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from daemon.events import Event, EventError, decode
from daemon.ingest.admission import Admission
from daemon.ingest.batch import EventSink, PartitionBatch, RejectedEvents, TopicPartitionId
from daemon.ingest.broker import admin_options
from daemon.ingest.config import KafkaConfig
from daemon.ingest.dead_letter import Blocked, DeadLetter, DeadLetterBackoff, DeadLetterSender
from daemon.ingest.limits import FieldLimits
from daemon.ingest.metrics import IngestMetrics

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
        # Offsets applied but not yet committed (commit failed): retried every loop.
        self._pending: dict[TopicPartition, int] = {}
        # Partition -> offset below which messages are replays of committed history.
        self._replay_until: dict[TopicPartition, int] = {}
        self._last_lag = 0.0
        self._next_offset: dict[TopicPartition, int] = {}
        self._needs_replay: set[TopicPartition] = set()
        # Dead letters not delivered yet, per (paused) partition, in offset order.
        self._owed: dict[TopicPartition, list[DeadLetter]] = {}
        self._backoff = DeadLetterBackoff(config.dead_letter_retries, config.dead_letter_backoff,
                                          config.dead_letter_max_backoff)
        self._sender: DeadLetterSender | None = None
        self._last_dead_letter_error = ""
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
            self._sender = DeadLetterSender(self._make_producer, self.config.dead_letter_topic,
                                            self._max_request_bytes())
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
        return {(tp.topic, tp.partition): b for tp, b in self._backoff.paused().items()}

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
        if self._sender is not None:
            self._sender.close()

    # -- the loop ---------------------------------------------------------------------------

    def _poll_once(self) -> None:
        assert self._consumer is not None
        for tp in self._backoff.due():
            self._retry_owed(tp)
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
        admit = self.admission.check
        capped = self.limits.apply
        now = time.monotonic()
        skew = self.config.max_event_skew
        wall = time.time()
        dead: dict[TopicPartition, list[DeadLetter]] = {}
        for tp, messages in records.items():
            if tp in self._owed:
                # Fetched before the pause took effect: read again once the partition resumes.
                self._consumer.seek(tp, messages[0].offset)  # type: ignore[union-attr]
                continue
            letters = dead.setdefault(tp, [])
            valid: list[Event] = []
            valid_records: list[ConsumerRecord] = []
            replayed: list[Event] = []
            replay_until = self._replay_until.get(tp, -1)
            partition = (tp.topic, tp.partition)
            for record in messages:
                try:
                    event = decode(record.value, limit)
                except EventError as exc:
                    if record.offset >= replay_until:
                        letters.append(DeadLetter(record, exc.reason, exc.detail))
                    continue
                event = capped(event)
                refused = admit(event, partition, now)
                if refused is not None:
                    if record.offset >= replay_until:
                        letters.append(DeadLetter(record, *refused))
                    continue
                if skew is not None:
                    event = self._clamp(event, record.timestamp, wall, skew)
                if record.offset < replay_until:
                    replayed.append(event)
                else:
                    valid.append(event)
                    valid_records.append(record)
            first, last = messages[0].offset, messages[-1].offset
            if replayed:
                self._apply(PartitionBatch(tp.topic, tp.partition, replayed, first,
                                           min(last, replay_until - 1), replay=True), [], letters)
            if valid:
                self._apply(PartitionBatch(tp.topic, tp.partition, valid,
                                           max(first, replay_until), last), valid_records,
                            letters)
            if last + 1 >= replay_until:
                self._replay_until.pop(tp, None)
            self._next_offset[tp] = last + 1
        for model, version in self.admission.take_retired():
            self.metrics.forget_version(model, version)
        for tp, letters in dead.items():
            letters.sort(key=lambda letter: letter.record.offset)
            self._settle(tp, letters)
        self._commit_pending()

    def _clamp(self, event: Event, record_ms: int, wall: float, skew: float) -> Event:
        """Event time is the producer's word: hold it within ``skew`` of the broker's record
        time, and ahead of it never past the daemon's own clock plus ``skew``. A far-future
        time would otherwise evict windows, expire every pending label and hide silence."""
        ts = event.ts_s
        record = record_ms / 1000.0 if record_ms >= 0 else wall
        high = min(record, wall) + skew
        if ts > high:
            self.metrics.clamped.labels("future").inc()
            return msgspec.structs.replace(event, ts=high * 1000.0)
        if ts < record - skew:
            self.metrics.clamped.labels("past").inc()
            return msgspec.structs.replace(event, ts=(record - skew) * 1000.0)
        return event

    def _settle(self, tp: TopicPartition, letters: list[DeadLetter]) -> None:
        """Deliver a partition's dead letters; commit up to the first one not delivered."""
        owed = self._deliver(letters)
        if not owed:
            self._pending[tp] = self._next_offset[tp]
            return
        first = owed[0].record.offset
        self._owed[tp] = owed
        self._pending[tp] = first
        self._hold(tp, first, owed)

    def _deliver(self, letters: list[DeadLetter]) -> list[DeadLetter]:
        """Send; count what was delivered; return what was not, in offset order."""
        if not letters:
            return []
        assert self._sender is not None
        owed: list[DeadLetter] = []
        for letter, error in zip(letters, self._sender.send(letters), strict=True):
            if error is None:
                self.metrics.dead_lettered.labels(letter.reason).inc()
            else:
                owed.append(letter)
                self._last_dead_letter_error = error
        return owed

    def _hold(self, tp: TopicPartition, first: int, owed: list[DeadLetter]) -> None:
        error = self._last_dead_letter_error
        self.metrics.consumer_errors.labels("dead_letter_send").inc()
        entry = self._backoff.failed(tp, first, error)
        log.warning("dead-letter send failed for %d record(s) of %s:%d from offset %d (%s); "
                    "partition paused, retry %d in %.1fs", len(owed), tp.topic, tp.partition,
                    first, error, entry.attempts, entry.retry_at - time.monotonic())
        if self._consumer is not None and tp in self._consumer.assignment():
            self._consumer.pause(tp)
        self._report_paused()

    def _retry_owed(self, tp: TopicPartition) -> None:
        owed = self._owed.get(tp)
        if owed is None:
            self._backoff.forget(tp)
            self._report_paused()
            return
        still = self._deliver(owed)
        if still:
            self._owed[tp] = still
            self._pending[tp] = still[0].record.offset
            self._hold(tp, still[0].record.offset, still)
            return
        del self._owed[tp]
        self._backoff.succeeded(tp)
        self._pending[tp] = self._next_offset[tp]
        if self._consumer is not None and tp in self._consumer.assignment():
            self._consumer.resume(tp)
        self._commit_pending()
        self._report_paused()

    def _report_paused(self) -> None:
        self.metrics.paused_partitions.set(len(self._backoff.paused()))

    def _apply(self, batch: PartitionBatch, records: Sequence[ConsumerRecord],
               dead: list[DeadLetter]) -> None:
        try:
            self.sink.apply(batch)
        except RejectedEvents as exc:
            # Applied but for these: dead-letter them as the records they came from.
            if not batch.replay:
                dead.extend(DeadLetter(records[i], "apply_error", reason)
                            for i, reason in sorted(exc.failures.items()))
        except Exception:
            log.exception("applying a batch failed; retrying its events one by one")
            self._apply_one_by_one(batch, records, dead)

    def _apply_one_by_one(self, batch: PartitionBatch, records: Sequence[ConsumerRecord],
                          dead: list[DeadLetter]) -> None:
        # A poison event must neither wedge the partition nor vanish: it is dead-lettered as
        # the record it came from (its own offset and bytes).
        for i, event in enumerate(batch.events):
            single = PartitionBatch(batch.topic, batch.partition, [event], batch.first_offset,
                                    batch.last_offset, batch.replay)
            try:
                self.sink.apply(single)
            except Exception as exc:
                if batch.replay:
                    continue
                dead.append(DeadLetter(records[i], "apply_error",
                                       f"{type(exc).__name__}: {exc}"))

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
            # The new owner re-reads from the committed offset: the first record still owed.
            self._owed.pop(tp, None)
            self._backoff.forget(tp)
            self._needs_replay.discard(tp)
            self._replay_until.pop(tp, None)
            self._next_offset.pop(tp, None)
        self.sink.release(ids)
        self.admission.release(ids)
        self.metrics.forget_partitions(ids)
        self._report_paused()
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
        retry: set[TopicPartition] = set()
        for tp in list(self._needs_replay):
            fetched = records.pop(tp, None)
            if tp not in consumer.assignment():
                continue
            try:
                committed = consumer.committed(tp)
            except Exception as exc:
                # Not fatal: read on from where the poll was (or the group's position), and
                # try the replay again after the next poll.
                self.metrics.consumer_errors.labels("committed_" + type(exc).__name__).inc()
                log.warning("committed offset of %s:%d unavailable (%s); replay retried",
                            tp.topic, tp.partition, exc)
                if fetched:
                    consumer.seek(tp, fetched[0].offset)
                retry.add(tp)
                continue
            if committed:
                # By offset, not by time: offsets_for_times is not reliable on every broker.
                consumer.seek(tp, max(0, committed - depth))
                self._replay_until[tp] = committed
            elif fetched:
                consumer.seek(tp, fetched[0].offset)
        self._needs_replay = retry

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
