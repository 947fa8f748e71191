"""One exception root: every exception class the installed packages define derives from
lifeguard.errors.LifeguardError, and lifeguard/errors.py's map names each room's root."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import lifeguard.errors
from lifeguard.errors import LifeguardError

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lifeguard", "daemon", "detectors", "actions", "deploy", "simulator")


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package in PACKAGES:
        for info in pkgutil.walk_packages([str(ROOT / package)], prefix=f"{package}."):
            if info.name.endswith("__main__"):  # runs the CLI when imported
                continue
            module = importlib.import_module(info.name)
            for name, obj in vars(module).items():
                if (inspect.isclass(obj) and issubclass(obj, BaseException)
                        and obj.__module__ == module.__name__):
                    found[f"{module.__name__}.{name}"] = obj
    return found


def test_every_error_lifeguard_defines_has_one_root() -> None:
    classes = _exception_classes()
    assert len(classes) > 20  # the walk found the rooms' trees
    strays = sorted(name for name, cls in classes.items() if not issubclass(cls, LifeguardError))
    assert strays == []


def test_the_map_in_lifeguard_errors_names_every_room_root() -> None:
    doc = lifeguard.errors.__doc__ or ""
    for root in ("IntegrityError", "ConfigError", "EventError", "StoreError",
                 "AlertPayloadError", "StepError", "DeployError", "ServingError",
                 "SimulatorError"):
        assert root in doc, root
    # one name for a sum mismatch: no other class calls itself that
    assert [n for n in _exception_classes() if n.endswith("IntegrityError")] == [
        "lifeguard.errors.IntegrityError"]
