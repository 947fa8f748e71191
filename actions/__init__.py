"""Pipeline steps (fine-tune, gate, export, quantize, prune, deploy): a typed context in,
artifacts with sums out.

Kept import-free so that importing it costs nothing. The public surface: ``actions.contract``
(StepContext -> StepResult, the worker's spec file), ``actions.errors`` (permanent vs
retryable), ``actions.steps`` (the registry and ``run_step``), ``actions.settings``
(ActionPolicy, TrainConfig), ``actions.snapshot`` (the labelled data format),
``actions.progress`` (callbacks and Prometheus).
"""
