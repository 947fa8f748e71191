"""Pipeline steps (fine-tune, gate, export, quantize, prune): typed context in, artifacts out.

Kept import-free so that importing it costs nothing. The public surface:
``actions.steps.STEPS`` (name -> ``run(StepContext) -> StepResult``), ``actions.context``
(StepContext, ActionPolicy, TrainConfig, StepResult), ``actions.errors`` (permanent vs
retryable), ``actions.snapshot`` (the labelled data format), ``actions.progress`` (callbacks
and Prometheus).
"""
