"""The current date and time in an IANA time zone.

Zones come from the system database (``/usr/share/zoneinfo``) or, where there
is none, from the ``tzdata`` package.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tools.base import Tool

# NOTE: not strftime("%A"), whose names follow the process locale.
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


class CurrentTimeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timezone: str = Field(
        default="UTC",
        min_length=1,
        max_length=64,
        description="An IANA time zone name, e.g. 'Europe/Paris' or 'America/New_York'.",
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'Europe/Paris' or 'UTC'") from None
        return value


def _utc_now() -> datetime:
    return datetime.now(UTC)


class CurrentTimeTool(Tool):
    """Tells the current time.

    Args:
        clock: Returns the current aware datetime; tests pass a fixed one.
    """

    name = "current_time"
    description = (
        "Get the current date and time in a time zone (IANA name, default UTC). "
        "Returns the ISO-8601 time with its UTC offset and the weekday."
    )
    Args = CurrentTimeArgs

    def __init__(self, clock: Callable[[], datetime] = _utc_now) -> None:
        self._clock = clock

    async def run(self, args: CurrentTimeArgs) -> dict[str, str]:
        now = self._clock().astimezone(ZoneInfo(args.timezone))
        return {
            "timezone": args.timezone,
            "iso": now.isoformat(timespec="seconds"),
            "weekday": _WEEKDAYS[now.weekday()],
            "abbreviation": now.tzname() or "",
        }
