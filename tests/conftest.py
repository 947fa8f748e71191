"""Shared fixtures: a real local broker per test module, seeded randomness, temp dirs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from daemon.ingest.broker import LocalBroker

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalBroker]:
    from daemon.ingest.broker import LocalBroker

    with LocalBroker() as local:
        yield local
