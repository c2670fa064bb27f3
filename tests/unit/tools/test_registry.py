import json
import logging
import math
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, ConfigDict, Field

from agent.dto import ToolErrorKind, ToolInvocation
from agent.errors import ToolNotFoundError
from agent.ports import ToolExecutor
from tests.support.sample_tools import SleepTool
from tools import Tool, ToolFailure, ToolRegistry, build_registry
from tools.calculator import CalculatorTool
from tools.current_time import CurrentTimeTool


class Point(BaseModel):
    model_config = ConfigDict(extra="forbid")

    x: int
    y: int = 0


class PlotArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    points: list[Point] = Field(min_length=1)
    origin: Point | None = Field(default=None, description="Where the axes cross.")


class PlotTool(Tool):
    name = "plot"
    description = "Plot points."
    Args = PlotArgs

    async def run(self, args: PlotArgs) -> dict[str, Any]:
        return {"count": len(args.points), "label": "héllo"}


class BoomTool(Tool):
    name = "boom"
    description = "Always breaks."
    Args = CalculatorTool.Args

    async def run(self, args: Any) -> str:
        raise RuntimeError("password=hunter2 at /srv/secret.db")


class RefusingTool(BoomTool):
    name = "refusing"

    async def run(self, args: Any) -> str:
        raise ToolFailure("the quota is used up")


class NaNTool(BoomTool):
    name = "nan"

    async def run(self, args: Any) -> float:
        return math.nan


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry([CalculatorTool(), CurrentTimeTool(), PlotTool(), BoomTool(), RefusingTool(), NaNTool()])


def test_implements_the_tool_executor_port(registry: ToolRegistry) -> None:
    assert isinstance(registry, ToolExecutor)


def test_calculator_spec_is_a_plain_openai_function_schema(registry: ToolRegistry) -> None:
    spec = registry.get("calculator")
    params = next(s for s in registry.specs() if s.name == "calculator").parameters

    jsonschema.Draft202012Validator.check_schema(params)
    assert spec.name == "calculator"
    assert params["type"] == "object"
    assert params["required"] == ["expression"]
    assert params["properties"]["expression"]["type"] == "string"
    assert params["properties"]["expression"]["maxLength"] == 500
    assert params["additionalProperties"] is False
    assert "title" not in params
    jsonschema.validate({"expression": "1+1"}, params)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"expression": "1+1", "extra": 1}, params)


def test_nested_models_are_inlined_without_refs(registry: ToolRegistry) -> None:
    params = next(s for s in registry.specs() if s.name == "plot").parameters

    text = json.dumps(params)
    assert "$ref" not in text
    assert "$defs" not in text
    jsonschema.Draft202012Validator.check_schema(params)
    assert params["properties"]["points"]["items"]["required"] == ["x"]
    jsonschema.validate({"points": [{"x": 1}], "origin": {"x": 0, "y": 0}}, params)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"points": [{"x": "a"}]}, params)


def test_recursive_models_are_rejected_at_registration() -> None:
    class Node(BaseModel):
        children: list["Node"] = []

    class TreeTool(PlotTool):
        name = "tree"
        Args = Node

    with pytest.raises(ValueError, match="recursive"):
        ToolRegistry([TreeTool()])


async def test_list_tools_matches_specs(registry: ToolRegistry) -> None:
    listed = await registry.list_tools()

    assert [s.name for s in listed] == ["calculator", "current_time", "plot", "boom", "refusing", "nan"]
    assert listed == registry.specs()
    assert listed[0].to_openai()["function"]["parameters"]["required"] == ["expression"]


async def test_success_encodes_non_string_results_as_json(registry: ToolRegistry) -> None:
    result = await registry.execute(
        ToolInvocation(name="plot", arguments={"points": [{"x": 1}, {"x": 2}]}, call_id="c1")
    )

    assert not result.is_error
    assert result.error_kind is None
    assert json.loads(result.content) == {"count": 2, "label": "héllo"}
    assert (result.call_id, result.name) == ("c1", "plot")
    assert result.duration_ms >= 0


async def test_measures_duration() -> None:
    result = await ToolRegistry([SleepTool()]).execute(ToolInvocation(name="sleep", arguments='{"seconds": 0.05}'))

    assert json.loads(result.content) == {"slept": 0.05}
    assert 40 <= result.duration_ms < 2000


@pytest.mark.parametrize(
    ("arguments", "field", "needle"),
    [
        ('{"expression": ', "arguments", "not valid JSON"),
        ("[1, 2]", "arguments", "must be a JSON object, got list"),
        ('"1+1"', "arguments", "must be a JSON object, got str"),
        ("{}", "expression", "Field required"),
        ('{"expression": 12}', "expression", "valid string"),
        ('{"expression": "1", "precision": 3}', "precision", "Extra inputs are not permitted"),
    ],
)
async def test_invalid_arguments_name_the_field(
    registry: ToolRegistry, arguments: str, field: str, needle: str
) -> None:
    result = await registry.execute(ToolInvocation(name="calculator", arguments=arguments))

    assert result.is_error
    assert result.error_kind is ToolErrorKind.INVALID_ARGUMENTS
    assert [e.field for e in result.field_errors] == [field]
    assert needle in result.field_errors[0].message
    assert f"{field}: " in result.content
    assert "Invalid arguments for tool 'calculator'" in result.content
    assert "expression (string, required)" in result.content


async def test_nested_errors_use_dotted_paths(registry: ToolRegistry) -> None:
    arguments = {"points": [{"x": 1}, {"x": "nope", "z": 1}], "origin": {}}

    result = await registry.execute(ToolInvocation(name="plot", arguments=arguments))

    assert result.error_kind is ToolErrorKind.INVALID_ARGUMENTS
    assert sorted(e.field for e in result.field_errors) == ["origin.x", "points.1.x", "points.1.z"]
    for field in ("origin.x", "points.1.x", "points.1.z"):
        assert field in result.content


async def test_blank_arguments_mean_no_arguments(registry: ToolRegistry) -> None:
    result = await registry.execute(ToolInvocation(name="current_time", arguments="  "))

    assert not result.is_error
    assert json.loads(result.content)["timezone"] == "UTC"


async def test_unknown_tool_is_not_found_and_lists_tools(registry: ToolRegistry) -> None:
    result = await registry.execute(ToolInvocation(name="weather", arguments="{}"))

    assert result.is_error
    assert result.error_kind is ToolErrorKind.NOT_FOUND
    assert "'weather'" in result.content
    assert "boom, calculator, current_time, nan, plot, refusing" in result.content


def test_get_unknown_raises_tool_not_found(registry: ToolRegistry) -> None:
    with pytest.raises(ToolNotFoundError, match="Unknown tool 'weather'"):
        registry.get("weather")
    assert "weather" not in registry
    assert "calculator" in registry
    assert len(registry) == 6


async def test_tool_failure_is_failed_with_its_message(registry: ToolRegistry) -> None:
    result = await registry.execute(ToolInvocation(name="refusing", arguments={"expression": "1"}))

    assert result.error_kind is ToolErrorKind.FAILED
    assert result.content == "the quota is used up"


async def test_unexpected_exception_is_internal_and_scrubbed(
    registry: ToolRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tools.registry"):
        result = await registry.execute(ToolInvocation(name="boom", arguments={"expression": "1"}))

    assert result.is_error
    assert result.error_kind is ToolErrorKind.INTERNAL
    assert result.content == "Tool 'boom' failed with an internal error."
    assert "hunter2" not in result.model_dump_json()
    assert "RuntimeError" not in result.model_dump_json()
    assert "hunter2" in caplog.text  # the traceback goes to the log instead
    assert any(record.exc_info for record in caplog.records)


async def test_unencodable_result_is_internal(registry: ToolRegistry) -> None:
    result = await registry.execute(ToolInvocation(name="nan", arguments={"expression": "1"}))

    assert result.error_kind is ToolErrorKind.INTERNAL


def test_duplicate_names_are_rejected() -> None:
    registry = ToolRegistry([CalculatorTool()])

    with pytest.raises(ValueError, match="duplicate tool name 'calculator'"):
        registry.register(CalculatorTool())


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "dotted.name", "ok\n"])
def test_names_openai_refuses_are_rejected(name: str) -> None:
    bad = type("BadTool", (PlotTool,), {"name": name})

    with pytest.raises(ValueError, match="name must match"):
        ToolRegistry([bad()])


def test_build_registry_defaults_to_builtins() -> None:
    assert [s.name for s in build_registry().specs()] == ["calculator", "current_time"]
    assert len(build_registry(include_builtins=False)) == 0
