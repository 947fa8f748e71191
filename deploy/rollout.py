"""Rollout strategies over a fleet: ``rolling`` (one replica at a time, health and a smoke
inference before the next) and ``canary`` (k replicas first, the daemon's judge decides).

Every step writes the desired and observed version per replica to the ``RolloutStore`` before
and after it acts, so ``resume()`` after a controller crash starts from what the fleet
actually serves and then continues or rolls back. A failed canary rolls back by itself.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from deploy.config import RolloutConfig
from deploy.errors import (
    PermanentDeployError,
    ReplicaUnavailableError,
    SmokeTestError,
)
from deploy.fleet import FleetClient, Observation
from deploy.repository import ModelRepository
from deploy.rollout_store import RolloutRecord, RolloutStore
from deploy.verdict import CanaryQuery, CanaryVerdict, Judge

log = logging.getLogger(__name__)


class RolloutController:
    """Drives rollouts of one repository's versions onto one fleet, recording each step."""

    def __init__(self, fleet: FleetClient, repository: ModelRepository, store: RolloutStore,
                 config: RolloutConfig, sleep: Callable[[float], None] = time.sleep) -> None:
        self.fleet = fleet
        self.repository = repository
        self.store = store
        self.config = config
        self._sleep = sleep

    # --- entry points ---------------------------------------------------------------------

    def stable_version(self, model: str) -> int | None:
        """The version most reachable replicas serve now (None when none serves the model)."""
        served = [o.version for o in self.fleet.observe(model).values()
                  if o.reachable and o.version is not None]
        return collections.Counter(served).most_common(1)[0][0] if served else None

    def rolling(self, model: str, version: int) -> RolloutRecord:
        return self._run(self._create(model, version, "rolling"), judge=None)

    def canary(self, model: str, version: int, judge: Judge) -> RolloutRecord:
        return self._run(self._create(model, version, "canary"), judge)

    def resume(self, record: RolloutRecord, judge: Judge | None) -> RolloutRecord:
        """Continue a rollout a dead controller left unfinished, from what the fleet serves."""
        observed = self._observe(record)
        record = self.store.update(record, observed=observed)
        self.store.add_event(record.id, "reconciled",
                             {"phase": record.phase, "desired": record.desired,
                              "observed": observed})
        return self._run(record, judge)

    def reconcile(self, model: str) -> RolloutRecord | None:
        """Bring replicas that drifted from the last rollout's outcome (restarted, skipped while
        down) back to it; resume the rollout instead if it is unfinished. A rollout left in
        its canary phase (its deploy step timed out or was killed, so no judge is watching)
        is abandoned: the fleet is reconciled to one version, the stable one."""
        record = self.store.latest(model)
        if record is None:
            return None
        if not record.finished:
            if record.phase == "canary":
                return self.abandon(model, "canary abandoned: its deploy ended before a "
                                           "verdict (timed out or killed)")
            return self.resume(record, judge=None)
        target = record.to_version if record.phase == "done" else record.from_version
        for url in self.fleet.urls:
            seen = self.fleet.replica(url).observe(model)
            if seen.reachable and seen.version != target:
                self.store.add_event(record.id, "drift", {"url": url, "serves": seen.version,
                                                          "want": target})
                try:
                    record = self._apply(record, url, target)
                except ReplicaUnavailableError as exc:
                    self.store.add_event(record.id, "replica_skipped",
                                         {"url": url, "error": exc.message})
        return record

    def abandon(self, model: str, reason: str) -> RolloutRecord | None:
        """Roll an unfinished rollout back: every replica to the stable version, the new one
        withdrawn. None when nothing is unfinished."""
        record = self.store.active(model)
        if record is None:
            return None
        observed = self._observe(record)
        record = self.store.update(record, observed=observed)
        self.store.add_event(record.id, "abandoned", {"phase": record.phase, "reason": reason,
                                                      "observed": observed})
        return self._roll_back(self._fail(record, reason))

    # --- the state machine ----------------------------------------------------------------

    def _create(self, model: str, version: int, strategy: str) -> RolloutRecord:
        self.repository.verify(model, version)  # a tampered version never starts
        observed = {url: o.version for url, o in self.fleet.observe(model).items()}
        stable = self.stable_version(model)
        if strategy == "canary" and stable is None:
            strategy = "rolling"  # nothing serves yet: there is no stable side to compare with
        phase = "canary" if strategy == "canary" else "rolling"
        return self.store.create(model, stable, version, strategy, phase,
                                 desired=dict(observed), observed=observed)

    def _run(self, record: RolloutRecord, judge: Judge | None) -> RolloutRecord:
        try:
            while not record.finished:
                if record.phase in ("rolling", "promoting"):
                    record = self._roll_forward(record)
                elif record.phase == "canary":
                    if judge is None:
                        raise ValueError("a canary rollout needs a judge")
                    record = self._canary(record, judge)
                elif record.phase == "rolling_back":
                    record = self._roll_back(record)
                else:
                    raise ValueError(f"rollout {record.id} has unknown phase {record.phase!r}")
        except PermanentDeployError as exc:
            # The new version is at fault (refused, broken): restore the old one everywhere.
            # Re-read the record: the step that raised may have stored newer observations.
            record = self._roll_back(self._fail(self.store.get(record.id), str(exc)))
        return record

    def _roll_forward(self, record: RolloutRecord) -> RolloutRecord:
        """One replica at a time; each must load, report ready and pass a smoke inference."""
        skipped: list[str] = []
        for url in self.fleet.urls:
            if record.observed.get(url) == record.to_version and self._serves(record, url):
                continue
            record = self.store.update(record, desired={**record.desired,
                                                        url: record.to_version})
            try:
                record = self._apply(record, url, record.to_version)
            except ReplicaUnavailableError as exc:
                # A dead replica is not the version's fault: record it, reconcile it later.
                skipped.append(url)
                self.store.add_event(record.id, "replica_skipped",
                                     {"url": url, "error": exc.message})
        reason = f"replicas unreachable, pending: {skipped}" if skipped else None
        # A replica restarted from now on loads this version, not whatever is latest.
        self.repository.pin(record.model, record.to_version)
        return self.store.update(record, phase="done", reason=reason)

    def _canary(self, record: RolloutRecord, judge: Judge) -> RolloutRecord:
        cfg = self.config.canary
        canaries = self._canary_urls(record)
        for url in canaries:
            if record.observed.get(url) != record.to_version or not self._serves(record, url):
                record = self.store.update(record, desired={**record.desired,
                                                            url: record.to_version})
                try:
                    record = self._apply(record, url, record.to_version)
                except ReplicaUnavailableError as exc:
                    return self._fail(record, f"canary replica {url} failed: {exc.message}")
        if record.canary_since is None:
            record = self.store.update(record, canary_since=time.time())
        assert record.canary_since is not None
        deadline = record.canary_since + cfg.timeout_s  # wall clock: survives a restart
        query = CanaryQuery(record.model, record.to_version, record.from_version,
                            record.canary_since)
        last_state = None
        while True:
            for url in canaries:
                seen = self.fleet.replica(url).observe(record.model)
                if not (seen.reachable and seen.ready and seen.version == record.to_version):
                    return self._fail(record, f"canary replica {url} failed: {_describe(seen)}")
            verdict = self._ask(judge, query)
            if verdict.state != last_state:
                last_state = verdict.state
                self.store.add_event(record.id, "verdict", verdict.as_dict())
            if verdict.state == "unhealthy":
                return self._fail(record, f"canary unhealthy: {verdict.reason}")
            if verdict.state == "healthy" and verdict.events >= cfg.min_events:
                self.store.add_event(record.id, "promote", verdict.as_dict())
                return self.store.update(record, phase="promoting")
            if time.time() >= deadline:
                return self._fail(record, f"no conclusive verdict within {cfg.timeout_s}s "
                                          f"({verdict.events} canary events)")
            self._sleep(cfg.poll_interval_s)

    def _roll_back(self, record: RolloutRecord) -> RolloutRecord:
        target = record.from_version
        if record.to_version is not None and record.to_version != target:
            # Pinned first: a replica restarted mid-rollback must not load it again.
            self.repository.withdraw(record.model, record.to_version,
                                     record.reason or "rolled back", stable=target)
        desired = {url: target for url in self.fleet.urls}
        record = self.store.update(record, desired=desired)
        pending: list[str] = []
        for url in self.fleet.urls:
            if record.observed.get(url) == target and self._serves(record, url, target):
                continue
            try:
                record = self._apply(record, url, target)
            except ReplicaUnavailableError as exc:
                pending.append(url)
                self.store.add_event(record.id, "replica_skipped",
                                     {"url": url, "error": exc.message})
            except PermanentDeployError as exc:
                pending.append(url)  # the old version itself will not load: say so, go on
                self.store.add_event(record.id, "rollback_refused",
                                     {"url": url, "error": str(exc)})
        reason = record.reason or "rolled back"
        if pending:
            reason += f"; not yet restored: {pending}"
        return self.store.update(record, phase="rolled_back", reason=reason)

    # --- one replica ----------------------------------------------------------------------

    def _apply(self, record: RolloutRecord, url: str, version: int | None) -> RolloutRecord:
        """Make ``url`` serve ``version`` (None: unload), retrying while it is unreachable."""
        self.store.check_fence()  # no fleet action for a run this instance no longer owns
        replica = self.fleet.replica(url)
        deadline = time.monotonic() + self.config.replica_timeout_s
        while True:
            try:
                if version is None:
                    replica.unload(record.model)
                else:
                    published = self.repository.record(record.model, version)
                    replica.load(record.model, published.triton_config(),
                                 timeout_s=self.config.load_timeout_s)
                    self._smoke(url, record.model, version, published.kv_cache)
                break
            except ReplicaUnavailableError:
                if time.monotonic() >= deadline:
                    raise
                self._sleep(0.2)
        self.store.add_event(record.id, "applied", {"url": url, "version": version})
        return self.store.update(record, observed={**record.observed, url: version})

    def _smoke(self, url: str, model: str, version: int,
               kv: tuple[int, int, int] | None) -> None:
        """Ready, then one inference through the tensor path (what a Triton ONNX model takes),
        answered by the new version with finite logits."""
        replica = self.fleet.replica(url)
        if not (replica.ready() and replica.model_ready(model, version)):
            raise SmokeTestError(f"{url}: {model} v{version} loaded but not ready")
        tokenizer = self.repository.version_dir(model, version) / "tokenizer.json"
        if tokenizer.is_file():
            ids = _smoke_ids(tokenizer, self.config.smoke_text)
            inputs = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            if kv is not None:  # every tensor the config lists, as Triton's backend wants
                inputs.update(_empty_cache(ids, kv))
            answer = replica.infer_tensors(model, inputs)
            logits = answer.outputs.get("logits")
            if logits is None or logits.shape[0] != 1 or not np.isfinite(logits).all():
                raise SmokeTestError(f"{url}: v{version} gave no finite logits")
            served = answer.model_version
        else:  # no fast tokenizer file: use the replica's text path
            text = replica.infer_text(model, [self.config.smoke_text])
            if not any(text.outputs.values()):
                raise SmokeTestError(f"{url}: v{version} answered with empty outputs")
            served = text.model_version
        if served != str(version):
            raise SmokeTestError(f"{url}: answered from v{served}, not v{version}")

    def _serves(self, record: RolloutRecord, url: str, version: int | None = None) -> bool:
        want = record.to_version if version is None else version
        seen = self.fleet.replica(url).observe(record.model)
        return seen.reachable and seen.version == want

    def _observe(self, record: RolloutRecord) -> dict[str, int | None]:
        seen = self.fleet.observe(record.model)
        # An unreachable replica keeps its last known version: we cannot learn better now.
        return {url: (o.version if o.reachable else record.observed.get(url))
                for url, o in seen.items()}

    def _canary_urls(self, record: RolloutRecord) -> list[str]:
        k = self.config.canary.replicas
        chosen = [u for u, v in record.desired.items() if v == record.to_version]
        if len(chosen) >= k:
            return chosen[:k]  # a resumed canary keeps the replicas it had
        # Fresh canaries: reachable replicas first, so a dead one does not sink the rollout.
        rest = [u for u in self.fleet.urls if u not in chosen]
        rest.sort(key=lambda u: not self.fleet.replica(u).observe(record.model).reachable)
        return (chosen + rest)[:k]

    def _ask(self, judge: Judge, query: CanaryQuery) -> CanaryVerdict:
        try:
            return judge(query)
        except Exception as exc:  # a judge that cannot answer is "no data", never a promote
            log.warning("canary judge failed: %r", exc)
            return CanaryVerdict("insufficient", f"judge failed: {exc!r}", 0)

    def _fail(self, record: RolloutRecord, reason: str) -> RolloutRecord:
        log.warning("rollout %s rolling back: %s", record.id, reason)
        return self.store.update(record, phase="rolling_back", reason=reason)


def _smoke_ids(tokenizer_json: Path, text: str) -> np.ndarray:
    from tokenizers import Tokenizer

    ids = Tokenizer.from_file(str(tokenizer_json)).encode(text).ids or [0]
    return np.asarray([ids], dtype=np.int64)


def _empty_cache(ids: np.ndarray, kv: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """A first step's cache inputs: positions 0..n-1 and an empty past per layer."""
    layers, heads, head_dim = kv
    empty = np.zeros((ids.shape[0], heads, 0, head_dim), dtype=np.float32)
    return {"position_ids": np.arange(ids.shape[1], dtype=np.int64)[None, :].repeat(
        ids.shape[0], axis=0),
            **{f"past_key_values.{i}.{kind}": empty for i in range(layers)
               for kind in ("key", "value")}}


def _describe(seen: Observation) -> str:
    if not seen.reachable:
        return f"unreachable ({seen.error})"
    if not seen.ready:
        return "not ready"
    return f"serves v{seen.version}"
