"""The base of every config model: unknown keys fail with their path, values are frozen, and
durations read as seconds or as ``90s``/``30m``/``6h``/``1d``."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


class StrictModel(BaseModel):
    """A misspelled key fails at start-up instead of silently taking its default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_duration(value: Any) -> Any:
    """``90``, ``"90s"``, ``"30m"``, ``"6h"``, ``"1d"`` → seconds; other types left to pydantic."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if not match:
            raise ValueError(f"not a duration: {value!r} (use e.g. 90s, 30m, 6h, 1d)")
        return float(match.group(1)) * _UNIT_S[match.group(2)]
    return value


# Seconds; YAML may say "30m". Annotated so that the JSON Schema documents both forms.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(ge=0, json_schema_extra={"description": "seconds, or a string like 90s, 30m, 6h, 1d"}),
]
