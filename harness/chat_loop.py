"""Runs the ``support`` scenario through the embedded stack and watches the loop close for a
generator: the same observer as the classifier's loop (the daemon's API, what each replica
serves), with quality the simulator's ground truth (ROUGE-L of each answer against the known
correct one) split into before the shift, during it, and after the new version serves."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from harness.loop import LoopResult, LoopState, Observer
from harness.processes import TOPIC, Stack
from simulator.chat import ChatDriverConfig, ChatSimulator
from simulator.support import SupportScenarioConfig


def run_support(stack: Stack, scenario: SupportScenarioConfig,
                on_tick: Callable[[LoopState], None] | None = None, poll_s: float = 1.0,
                settle_s: float = 10.0, after_recovery_s: float | None = None,
                endpoint: Literal["completions", "chat"] = "chat") -> LoopResult:
    """Drive ``scenario`` until it ends, or ``after_recovery_s`` past the recovery, through
    the replicas' ``/v1/chat/completions`` (``chat``: the daemon sees messages, and the retrain
    renders them as the replica did) or ``/v1/completions``. Ctrl-C stops the simulator first
    and goes on up."""
    assert stack.broker is not None
    driver = ChatDriverConfig(urls=stack.replica_urls, kafka=stack.broker.bootstrap,
                              topic=TOPIC, concurrency=4, endpoint=endpoint)
    simulator = ChatSimulator(scenario, driver, bucket_s=5.0)
    state = LoopState()
    state.shift_at_s = None if scenario.stationary else scenario.shift_at_s
    observer = Observer(stack, state)
    shift_marked = False
    simulator.start()
    state.started = time.monotonic()
    try:
        while not simulator.wait(poll_s):
            if simulator.stats.started_monotonic is not None:
                state.started = simulator.stats.started_monotonic
            if (state.shift_at_s is not None and not shift_marked
                    and state.now_s() >= state.shift_at_s):
                shift_marked = True
                state.mark("shift", f"chats shift to the {scenario.shift_product}")
            observer.poll()
            state.simulator = simulator.stats
            if on_tick is not None:
                on_tick(state)
            if state.done_after_recovery(settle_s, after_recovery_s):
                simulator.stop()
    except KeyboardInterrupt:
        stack.note("interrupted: stopping the chat simulator")
        simulator.stop(timeout_s=3.0)
        raise
    observer.poll()
    state.simulator = stats = simulator.stats
    if on_tick is not None:
        on_tick(state)
    shift = state.shift_at_s
    recovered = None if state.recover_s is None or shift is None else shift + state.recover_s
    pre = stats.quality_between(0.0, shift)
    during = None if shift is None else stats.quality_between(shift, recovered)
    post = None if recovered is None else stats.quality_between(recovered + settle_s, None)
    return LoopResult(state, pre, during, post, len(state.runs))
