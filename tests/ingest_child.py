"""A child process running the real Ingestor with a durable sink, for the kill -9 test.

The sink appends every applied request_id to a file and fsyncs before returning, so "applied"
means "on disk": whatever the file holds survived a kill -9.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from daemon.ingest.batch import PartitionBatch, TopicPartitionId
from daemon.ingest.config import KafkaConfig
from daemon.ingest.consumer import Ingestor
from daemon.ingest.metrics import IngestMetrics


class FileSink:
    def __init__(self, path: str) -> None:
        self._file = open(path, "a")  # noqa: SIM115

    def apply(self, batch: PartitionBatch) -> None:
        self._file.write("".join(f"{e.request_id}\n" for e in batch.events))
        self._file.flush()
        os.fsync(self._file.fileno())

    def release(self, partitions: Sequence[TopicPartitionId]) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", default="kill-test")
    parser.add_argument("--max-batch", type=int, default=500)
    args = parser.parse_args()
    config = KafkaConfig(bootstrap_servers=[args.bootstrap], topics=[args.topic],
                         group_id=args.group,
                         max_batch=args.max_batch, session_timeout_ms=6000,
                         heartbeat_interval_ms=1000)
    ingestor = Ingestor(config, [args.bootstrap], FileSink(args.out),
                        IngestMetrics(CollectorRegistry()))
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    ingestor.start()
    done.wait()
    ingestor.stop()


if __name__ == "__main__":
    main()
