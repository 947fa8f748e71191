"""Pure detectors: reference and current data in, a typed result out. No I/O, no clock.

Modules: result (DetectorResult), latency, accuracy, generation (a generator's TTFT, time per
token, truncation and empty answers), quality (answers scored against references), drift (+
stattests: Evidently's tests called directly, method and direction explicit), text (text
features), suite (the full pass over column frames), config (pydantic), report (the full
Evidently Report, returned not written), embeddings (the one module that loads a model).
Nothing heavy is imported here: evidently loads on the first drift test, torch when an encoder
is built, rouge-score on the first reference score.

Errors: only ``ValueError`` (pydantic's ValidationError is one) for a bad configuration or
mismatched inputs; permanent by nature, since detectors do no I/O there is nothing to retry.
"""
