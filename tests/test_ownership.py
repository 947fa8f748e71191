"""Which instance owns a model no instance has seen: the one assigned the partition the model's
key hashes to, exactly as the producers' default partitioner places its messages."""

from __future__ import annotations

from kafka.partitioner.default import DefaultPartitioner

from daemon.ingest.batch import PartitionBatch, TopicPartitionId
from daemon.ingest.config import KafkaConfig
from daemon.ingest.consumer import Ingestor
from daemon.ingest.metrics import IngestMetrics
from daemon.ingest.ownership import partition_of


class Discard:
    def apply(self, batch: PartitionBatch) -> None:
        pass

    def release(self, partitions: list[TopicPartitionId]) -> None:
        pass


class Metadata:
    """The two questions kafka-python's partitioner asks its cluster metadata."""

    def __init__(self, n: int) -> None:
        self.n = n

    def topics(self) -> set[str]:
        return {"t"}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set(range(self.n))

    available_partitions_for_topic = partitions_for_topic


def test_partition_of_is_kafka_pythons_default_partitioner() -> None:
    partitioner = DefaultPartitioner()
    for n in (1, 3, 7, 12):
        for key in ("m", "sentiment", "model-42", "ünï", "a" * 100):
            expected = partitioner.partition("t", key, key.encode(), None, None, Metadata(n))
            assert partition_of(key, n) == expected


def test_exactly_one_of_several_instances_owns_an_unseen_model() -> None:
    from prometheus_client import CollectorRegistry

    n = 6
    instances = []
    for i in range(3):  # a group of three, two partitions each, as a rebalance leaves them
        ingestor = Ingestor(KafkaConfig(topics=["inference"]), ["127.0.0.1:1"],
                            Discard(), IngestMetrics(CollectorRegistry()))
        ingestor.assignment = frozenset(("inference", p) for p in range(n) if p % 3 == i)
        ingestor.partition_counts = {"inference": n}
        instances.append(ingestor)
    for model in (f"model-{k}" for k in range(50)):
        assert sum(i.owns_key(model) for i in instances) == 1, model
    assert not Ingestor(KafkaConfig(), ["127.0.0.1:1"], Discard(),
                        IngestMetrics(CollectorRegistry())).owns_key("m"), "no assignment yet"
