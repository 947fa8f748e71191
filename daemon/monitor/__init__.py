"""Monitor, the second arrow: per model and version, bounded windows and a frozen reference,
the label join, and the evaluator that runs the detectors and publishes their results."""
