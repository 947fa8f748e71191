"""The run leases this instance holds, kept alive by a heartbeat thread; a lease another
instance took over (after it lapsed) marks its run lost, so the runner kills its worker, and
every write of a run made under a lost lease is refused by its fencing token."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

from daemon.act.runs import ActionRun, RunState
from daemon.act.store import Fence, StaleLeaseError, StateStore

log = logging.getLogger(__name__)


class LeaseKeeper:
    def __init__(self, store: StateStore, owner: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError(f"lease ttl must be > 0, got {ttl_s}")
        self.store = store
        self.owner = owner
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._fences: dict[str, Fence] = {}  # run id -> the lease held
        self._lost: set[str] = set()  # runs whose lease another instance took over
        self._thread: threading.Thread | None = None

    def acquire(self, run_id: str, force: bool = False) -> Fence | None:
        """Hold ``run_id``'s lease (None: another instance's lease is live)."""
        fence = self.store.acquire_lease(run_id, self.owner, self.ttl_s, force=force)
        if fence is not None:
            with self._lock:
                self._fences[run_id] = fence
                self._lost.discard(run_id)
        return fence

    def run_under_lease(self, run: ActionRun, body: Callable[[str, Fence], None]) -> None:
        """``body(run id, fence)`` while this instance holds the run's lease (nothing when
        another instance's lease is live); a lost lease is audited, a crash fails the run
        (fenced), and the lease is released at the end either way."""
        fence = self.acquire(run.id)
        if fence is None:
            return
        try:
            body(run.id, fence)
            if self.lost(run.id):  # found taken over by the heartbeat: its worker was killed
                raise StaleLeaseError(f"run {run.id}: lease {fence.token} taken over")
        except StaleLeaseError as exc:
            log.warning("%s", exc)
            self.store.audit("run.lease_lost", fence.owner, run.model, run.id,
                             {"token": fence.token, "error": str(exc)})
        except Exception as exc:
            log.exception("run %s crashed in the runner", run.id)
            with contextlib.suppress(StaleLeaseError):
                self.store.transition(run.id, RunState.FAILED, "runner", [RunState.RUNNING],
                                      error=f"runner error: {exc!r}", fence=fence)
        finally:
            self.release(run.id)

    def fence(self, run_id: str) -> Fence | None:
        with self._lock:
            return self._fences.get(run_id)

    def lost(self, run_id: str) -> bool:
        with self._lock:
            return run_id in self._lost

    def release(self, run_id: str) -> None:
        """Stop renewing, and let the lease lapse now so the next owner need not wait."""
        with self._lock:
            fence = self._fences.pop(run_id, None)
            self._lost.discard(run_id)
        if fence is not None:
            try:
                self.store.release_lease(fence)
            except Exception:  # at worst it lapses after its ttl
                log.exception("releasing the lease of %s failed", run_id)

    def start(self, stop: threading.Event) -> None:
        self._thread = threading.Thread(target=self._renew_forever, args=(stop,),
                                        name="lifeguard-leases", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _renew_forever(self, stop: threading.Event) -> None:
        while not stop.wait(self.ttl_s / 3):
            self.renew()

    def renew(self) -> None:
        with self._lock:
            fences = list(self._fences.values())
        for fence in fences:
            try:
                self.store.renew_lease(fence, self.ttl_s)
            except StaleLeaseError as exc:
                log.warning("%s", exc)
                with self._lock:
                    self._lost.add(fence.run_id)
            except Exception:  # a store hiccup: the next beat tries again
                log.exception("renewing the lease of %s failed", fence.run_id)
