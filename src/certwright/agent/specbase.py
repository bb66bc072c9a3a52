"""What agent specs share: a command to run, and the "exactly one of" rule."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field, field_validator

from certwright.configbase import Duration, Strict


def exactly_one(model: Strict, fields: tuple[str, ...], what: str) -> None:
    given = [f for f in fields if getattr(model, f) is not None]
    if len(given) != 1:
        raise ValueError(f"{what}: give exactly one of {', '.join(fields)}"
                         + (f" (got {', '.join(given)})" if given else ""))


class Command(Strict):
    """A program and its arguments (no shell), with a time-out."""

    run: tuple[str, ...] = Field(min_length=1)
    timeout: Duration = dt.timedelta(seconds=60)

    @field_validator("timeout")
    @classmethod
    def _positive(cls, v: dt.timedelta) -> dt.timedelta:
        if v <= dt.timedelta(0):
            raise ValueError("must be positive")
        return v


def command_of(v: Any) -> Any:
    # A bare string or list is the command itself.
    if isinstance(v, str):
        return {"run": [v]}
    if isinstance(v, list | tuple):
        return {"run": list(v)}
    return v


# -- issuers --------------------------------------------------------------------------------
