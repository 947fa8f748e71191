"""The supervisor: builds the daemon's parts from the config and owns the process lifetime.

SIGTERM or SIGINT stops polling, lets the batch in flight be applied and committed, stops the
HTTP server and exits 0; a second signal exits at once.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from types import FrameType

from prometheus_client import CollectorRegistry, disable_created_metrics

from daemon.act.store import StateStore
from daemon.assembly import EvaluatorNudge, FanoutSink, build_control, build_monitoring
from daemon.config import DaemonConfig
from daemon.http import ApiServer, create_app
from daemon.ingest.broker import LocalBroker, ensure_topics, free_port
from daemon.ingest.config import EMBEDDED
from daemon.ingest.consumer import Ingestor
from daemon.ingest.metrics import IngestMetrics, MetricsSink
from daemon.monitor.evaluation import Evaluation

log = logging.getLogger(__name__)

STALL_S = 60.0


class Daemon:
    def __init__(self, config: DaemonConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        # *_created series double the exposition for no operational use.
        disable_created_metrics()
        self.registry = registry or CollectorRegistry()
        self.metrics = IngestMetrics(self.registry)
        self.store = StateStore(config.state.location,
                                breach_reminder_s=config.audit.breach_reminder)
        self.monitoring = build_monitoring(config, self.registry, [self._on_evaluation])
        self.sink = FanoutSink([MetricsSink(self.metrics), self.monitoring.windows,
                                EvaluatorNudge(self.monitoring.evaluator)])
        # The port is fixed before anything starts: workers are told the API's URL.
        self.api_port = config.api.port or free_port()
        self.control, self.routers = build_control(
            config, self.store, self.monitoring.windows,
            f"http://{_reachable(config.api.host)}:{self.api_port}", self.owns, self.registry)
        self.broker: LocalBroker | None = None
        self.ingestor: Ingestor | None = None
        self.http: ApiServer | None = None
        self._stop = threading.Event()
        self._signals = 0
        _warn_missing_tokens(config)

    def _on_evaluation(self, evaluation: Evaluation) -> None:
        self.control.on_evaluation(evaluation)

    def owns(self, model: str) -> bool:
        """Whether this instance acts for ``model``: it owns the model's partition — the one
        its traffic came from, or for a model with no traffic here yet, the one its key hashes
        to (the producers' default partitioner), so exactly one instance claims it."""
        if self.ingestor is None or not self.ingestor.joined:
            return False
        windows = self.monitoring.windows.get(model)
        if windows is not None:
            return windows.partition in self.ingestor.assignment
        return self.ingestor.owns_key(model)

    # -- probes -----------------------------------------------------------------------------

    def healthy(self) -> tuple[bool, str]:
        ingestor = self.ingestor
        if ingestor is None:
            return False, "not started"
        if ingestor.error is not None:
            return False, f"ingest failed: {ingestor.error!r}"
        if not ingestor.alive and not self._stop.is_set():
            return False, "ingest thread is not running"
        if ingestor.last_loop and time.monotonic() - ingestor.last_loop > STALL_S:
            return False, f"ingest loop stalled for more than {STALL_S:.0f}s"
        paused = ingestor.paused_partitions()
        if paused:
            where = ", ".join(f"{t}:{p} at offset {b.offset}"
                              for (t, p), b in sorted(paused.items(), key=lambda kv: kv[0]))
            error = next(iter(paused.values())).error
            return False, (f"dead-letter topic {self.config.kafka.dead_letter_topic!r} refuses "
                           f"writes ({error}); paused: {where}")
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        ok, detail = self.healthy()
        if not ok:
            return ok, detail
        assert self.ingestor is not None
        if not self.ingestor.joined:
            return False, "waiting for the consumer group to assign partitions"
        return True, f"{len(self.ingestor.assignment)} partition(s) assigned"

    # -- lifetime ---------------------------------------------------------------------------

    def bootstrap_servers(self) -> list[str]:
        servers = self.config.kafka.bootstrap_servers
        if servers == EMBEDDED:
            if self.broker is None:
                self.broker = LocalBroker().start()
                log.info("embedded broker listening on %s", self.broker.bootstrap)
            return [self.broker.bootstrap]
        return list(servers)

    def start(self) -> None:
        _tune_gc()
        kafka = self.config.kafka
        bootstrap = self.bootstrap_servers()
        if kafka.create_topics:
            topics = dict.fromkeys(kafka.topics, kafka.partitions)
            topics[kafka.dead_letter_topic] = 1
            ensure_topics(bootstrap, topics, client_options=kafka.client_options,
                          replication_factor=kafka.replication_factor)
        # Windows and references are rebuilt from replayed history, not from the next traffic.
        kafka = kafka.model_copy(update={"replay_messages": self.config.replay_depth()})
        self.ingestor = Ingestor(kafka, bootstrap, self.sink, self.metrics,
                                 [m.name for m in self.config.models])
        api = self.config.api
        self.http = ApiServer(create_app(self.registry, self.healthy, self.ready,
                                         self.routers, api.max_body_bytes, api.docs),
                              api.host, self.api_port, api.max_connections).start()
        self.ingestor.start()
        self.monitoring.start()
        self.control.start()
        log.info("lifeguard up: consuming %s, HTTP on %s", ", ".join(kafka.topics), self.http.url)

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()
        self.control.stop()
        if self.ingestor is not None:
            self.ingestor.stop()
        self.monitoring.stop()
        if self.http is not None:
            self.http.stop()
        if self.broker is not None:
            self.broker.stop()
        self.store.close()

    def run(self) -> int:
        """Run until a signal; returns the process exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.start()
        assert self.ingestor is not None
        while not self._stop.wait(0.5):
            if not self.ingestor.alive:
                log.error("ingest thread ended unexpectedly; exiting")
                break
        failed = self.ingestor.error is not None
        self.stop()
        log.info("lifeguard stopped")
        return 1 if failed else 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals > 1:
            os._exit(128 + signum)
        log.info("%s received: finishing the batch in flight, then exiting",
                 signal.Signals(signum).name)
        self._stop.set()


def _warn_missing_tokens(config: DaemonConfig) -> None:
    """A daemon without credentials is safe (it refuses) but silently useless to on-call."""
    api = config.api
    if api.resolved_token() is None:
        log.warning("no API token (api.token or $%s): approve, reject, pause and resume are "
                    "REFUSED until one is set", api.token_env)
    if api.resolved_webhook_token() is None:
        log.warning("no webhook token (api.webhook_token or $%s): Alertmanager webhooks are "
                    "REFUSED until one is set", api.webhook_token_env)


def _reachable(host: str) -> str:
    """An address workers can dial for a server bound to ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def _tune_gc() -> None:
    """Windows and join buffers keep ~10^5 small objects alive by design; with the default
    thresholds the collector re-walks them every few hundred allocations, which doubled the
    per-event cost of ingest. Collect young objects less often, and freeze what start-up built
    (config, imports) out of every future collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
