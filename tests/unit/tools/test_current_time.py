import json
from datetime import UTC, datetime

import pytest

from agent.dto import ToolErrorKind, ToolInvocation
from tools import ToolRegistry
from tools.current_time import CurrentTimeArgs, CurrentTimeTool

WINTER = datetime(2025, 1, 15, 12, 0, 0, tzinfo=UTC)  # a Wednesday
SUMMER = datetime(2025, 7, 15, 12, 0, 0, tzinfo=UTC)  # a Tuesday


def fixed(moment: datetime) -> CurrentTimeTool:
    return CurrentTimeTool(clock=lambda: moment)


@pytest.mark.parametrize(
    ("moment", "iso", "weekday", "abbreviation"),
    [
        (WINTER, "2025-01-15T13:00:00+01:00", "Wednesday", "CET"),
        (SUMMER, "2025-07-15T14:00:00+02:00", "Tuesday", "CEST"),
    ],
)
async def test_paris_time_has_its_seasonal_offset(moment: datetime, iso: str, weekday: str, abbreviation: str) -> None:
    result = await fixed(moment).run(CurrentTimeArgs(timezone="Europe/Paris"))

    assert result == {
        "timezone": "Europe/Paris",
        "iso": iso,
        "weekday": weekday,
        "abbreviation": abbreviation,
    }


async def test_default_zone_is_utc() -> None:
    result = await fixed(WINTER).run(CurrentTimeArgs())

    assert result["timezone"] == "UTC"
    assert result["iso"] == "2025-01-15T12:00:00+00:00"


async def test_real_clock_through_registry_gives_an_aware_iso_time() -> None:
    registry = ToolRegistry([CurrentTimeTool()])

    result = await registry.execute(ToolInvocation(name="current_time", arguments='{"timezone": "Europe/Paris"}'))

    assert not result.is_error
    payload = json.loads(result.content)
    parsed = datetime.fromisoformat(payload["iso"])
    assert payload["iso"][-6:] in {"+01:00", "+02:00"}
    assert abs((parsed - datetime.now(UTC)).total_seconds()) < 60


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "Europe", "../etc/passwd", "/etc/localtime", "utc "])
async def test_unknown_zone_is_invalid_argument_naming_timezone(zone: str) -> None:
    registry = ToolRegistry([CurrentTimeTool()])

    result = await registry.execute(ToolInvocation(name="current_time", arguments={"timezone": zone}))

    assert result.is_error
    assert result.error_kind is ToolErrorKind.INVALID_ARGUMENTS
    assert [e.field for e in result.field_errors] == ["timezone"]
    assert "unknown time zone" in result.field_errors[0].message
    assert "timezone: " in result.content
