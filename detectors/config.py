"""The detector configuration one model carries: thresholds, test method per column, minimum
samples and the segment field. Pydantic with extra="forbid" so a misspelled key fails at start."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from detectors.stattests import check_method, is_pvalue
from lifeguard.config import StrictModel
from lifeguard.scores import Scorer
from lifeguard.tasks import Task

TextFeature = Literal["length", "words", "oov"]

# Distance methods' thresholds when the config gives none (Evidently's own defaults).
DISTANCE_DEFAULTS = {"wasserstein": 0.1, "ed": 0.1, "psi": 0.1, "jensenshannon": 0.1,
                     "kl_div": 0.1, "hellinger": 0.1}




class LatencyConfig(StrictModel):
    """Percentiles against SLOs (None: not checked) and the share of errors against a ceiling."""

    enabled: bool = True
    column: str = "latency_ms"
    status_column: str = "status"  # "ok" | "error", as in InferenceEvent
    p50_ms: float | None = Field(default=None, gt=0)
    p95_ms: float | None = Field(default=1000.0, gt=0)
    p99_ms: float | None = Field(default=None, gt=0)
    error_rate_max: float | None = Field(default=0.05, ge=0, le=1)
    min_samples: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _something_to_check(self) -> LatencyConfig:
        if self.enabled and (self.p50_ms, self.p95_ms, self.p99_ms,
                             self.error_rate_max) == (None, None, None, None):
            raise ValueError("latency is enabled with nothing to check: set an SLO, a "
                             "ceiling, or enabled: false")
        return self


class AccuracyConfig(StrictModel):
    """Quality on joined labels: accuracy and macro F1 (classification) or mean rating (generation).

    Each metric is checked against ``floor`` (if set) and against the reference window's value
    minus ``tolerance``. The floor is lowered by ``margin_z`` standard errors of the current
    estimate, the reference comparison by ``margin_z`` standard errors of the difference, so a
    window that is merely unlucky (few labels) does not breach; the result's threshold is the
    lowered bound actually used.
    """

    enabled: bool = True
    label_column: str = "label"  # the true class from FeedbackEvent
    prediction_column: str = "prediction"  # the model's label from InferenceEvent.output
    rating_column: str = "rating"  # FeedbackEvent.rating in [0, 1], for generators
    accuracy_floor: float | None = Field(default=None, ge=0, le=1)
    macro_f1_floor: float | None = Field(default=None, ge=0, le=1)
    rating_floor: float | None = Field(default=None, ge=0, le=1)
    tolerance: float = Field(default=0.05, ge=0, le=1)
    margin_z: float = Field(default=4.0, ge=0)
    min_labels: int = Field(default=200, ge=1)
    segment_column: str | None = None  # a categorical input such as language or tier
    min_labels_per_segment: int = Field(default=100, ge=1)
    segment_gap_max: float = Field(default=0.15, ge=0, le=1)


class GenerationConfig(StrictModel):
    """A generator's serving health (detectors.generation): TTFT and time-per-output-token
    p95 against SLOs, truncation and empty-output rates against ceilings (None: not checked).
    ``enabled`` None means: on for a causal-lm model, off for a classifier."""

    enabled: bool | None = None
    ttft_p95_ms: float | None = Field(default=1000.0, gt=0)
    tpot_p95_ms: float | None = Field(default=200.0, gt=0)
    truncation_rate_max: float | None = Field(default=0.10, ge=0, le=1)
    empty_output_rate_max: float | None = Field(default=0.02, ge=0, le=1)
    min_samples: int = Field(default=100, ge=1)

    @model_validator(mode="after")
    def _something_to_check(self) -> GenerationConfig:
        if self.enabled and (self.ttft_p95_ms, self.tpot_p95_ms, self.truncation_rate_max,
                             self.empty_output_rate_max) == (None, None, None, None):
            raise ValueError("generation is enabled with nothing to check: set an SLO, a "
                             "ceiling, or enabled: false")
        return self


class QualityConfig(StrictModel):
    """Answers scored against the references feedback brings (detectors.quality): ROUGE-L F1
    (word order counts; the default) or token F1 (cheaper, order-blind), judged against
    ``floor`` and the reference window's mean minus ``tolerance``, with a ``margin_z``
    standard-error margin. ``enabled`` None means: on for a causal-lm model."""

    enabled: bool | None = None
    scorer: Scorer = "rougeL"
    floor: float | None = Field(default=None, ge=0, le=1)
    tolerance: float = Field(default=0.05, ge=0, le=1)
    margin_z: float = Field(default=4.0, ge=0)
    min_references: int = Field(default=100, ge=2)


class ColumnDrift(StrictModel):
    """One flat column and the Evidently test that judges it."""

    column: str
    kind: Literal["numerical", "categorical"]
    method: str | None = None  # None: "ks" for numerical, "chisquare" for categorical
    threshold: float | None = None  # None: the Bonferroni share of family_alpha, or the
    # method's default distance

    @property
    def resolved_method(self) -> str:
        return self.method or ("ks" if self.kind == "numerical" else "chisquare")

    @model_validator(mode="after")
    def _known_method(self) -> ColumnDrift:
        check_method(self.resolved_method, self.kind)
        return self


class EmbeddingDrift(StrictModel):
    """Drift of a text column's sentence embeddings, by one of Evidently's embedding methods.

    All four scores breach above the threshold: "distance" between mean embeddings (cheap; the
    default threshold suits L2-normalised MiniLM vectors and windows of 200+), "model" (ROC AUC
    of a domain classifier), "ratio" (share of drifted components), "mmd". ``max_rows`` caps
    the rows of each side given to costly methods (mmd builds an n x n kernel).
    """

    method: Literal["distance", "model", "ratio", "mmd"] = "distance"
    threshold: float = Field(default=0.15, gt=0)
    dist: Literal["euclidean", "cosine", "cityblock", "chebyshev"] = "euclidean"
    pca_components: int | None = Field(default=None, ge=1)
    max_rows: int | None = Field(default=None, ge=10)

    @model_validator(mode="after")
    def _bounded_mmd(self) -> EmbeddingDrift:
        if self.method == "mmd" and (self.max_rows is None or self.max_rows > 5000):
            raise ValueError("mmd builds an n x n kernel: set max_rows <= 5000")
        return self


class TextDrift(StrictModel):
    """A text column: numeric features tested with ``method``, plus optional embedding drift
    (on the embeddings the caller supplies under the same column name)."""

    column: str
    features: tuple[TextFeature, ...] = ("length", "words", "oov")
    method: str = "ks"
    threshold: float | None = None
    embedding: EmbeddingDrift | None = None

    @model_validator(mode="after")
    def _known_method(self) -> TextDrift:
        check_method(self.method, "numerical")
        return self


class DriftConfig(StrictModel):
    """Input, prediction and output drift.

    ``family_alpha`` is the false-alarm probability of one whole evaluation across its p-value
    tests: each of the m p-value tests without an explicit threshold uses family_alpha / m
    (Bonferroni), so adding columns does not add false alarms.
    """

    enabled: bool = True
    texts: tuple[TextDrift, ...] | None = None  # None: the task's defaults (see SuiteConfig)
    columns: tuple[ColumnDrift, ...] | None = None  # None: the task's prediction/output columns
    family_alpha: float = Field(default=1e-4, gt=0, lt=1)
    min_samples: int = Field(default=200, ge=2)


class SuiteConfig(StrictModel):
    """Everything one model's full detector pass needs."""

    task: Task = "sequence-classification"
    latency: LatencyConfig = LatencyConfig()
    accuracy: AccuracyConfig = AccuracyConfig()
    generation: GenerationConfig = GenerationConfig()
    quality: QualityConfig = QualityConfig()
    drift: DriftConfig = DriftConfig()

    def task_latency(self) -> LatencyConfig:
        """``latency`` as the task reads it. A generator's end-to-end latency grows with the
        answer's length: its SLOs are TTFT and time per output token (``generation``), so
        the 1 s p95 default does not apply unless the config sets ``p95_ms`` itself. (A
        method, not a validator: the daemon sets ``task`` with model_copy, which validates
        nothing.)"""
        if self.task == "causal-lm" and "p95_ms" not in self.latency.model_fields_set:
            return self.latency.model_copy(update={"p95_ms": None})
        return self.latency

    @property
    def generation_enabled(self) -> bool:
        enabled = self.generation.enabled
        return self.task == "causal-lm" if enabled is None else enabled

    @property
    def quality_enabled(self) -> bool:
        enabled = self.quality.enabled
        return self.task == "causal-lm" if enabled is None else enabled

    def drift_texts(self) -> tuple[TextDrift, ...]:
        """The task's defaults: the input's features and embeddings; for a generator also the
        output's (what it answers drifts as well as what it is asked)."""
        if self.drift.texts is not None:
            return self.drift.texts
        inputs = TextDrift(column="input_text", embedding=EmbeddingDrift())
        if self.task == "causal-lm":
            return inputs, TextDrift(column="output_text", embedding=EmbeddingDrift())
        return (inputs,)

    def drift_columns(self) -> tuple[ColumnDrift, ...]:
        if self.drift.columns is not None:
            return self.drift.columns
        if self.task == "sequence-classification":
            return (ColumnDrift(column="prediction", kind="categorical"),
                    ColumnDrift(column="score", kind="numerical"))
        return ()

    def pvalue_threshold(self) -> float:
        """family_alpha / (number of p-value tests that take the default threshold)."""
        m = sum(is_pvalue(c.resolved_method) for c in self.drift_columns() if c.threshold is None)
        m += sum(len(t.features) for t in self.drift_texts()
                 if t.threshold is None and is_pvalue(t.method))
        return self.drift.family_alpha / max(m, 1)
