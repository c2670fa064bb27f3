import pytest

from agent.dto import ToolInvocation
from tests.support.sample_tools import EchoTool, echo_instance
from tools import BUILTIN_TOOLS, build_registry, load_tool
from tools.calculator import CalculatorTool
from tools.current_time import CurrentTimeTool


def test_builtin_tools_are_the_two_classes() -> None:
    assert [CalculatorTool, CurrentTimeTool] == BUILTIN_TOOLS


@pytest.mark.parametrize("path", ["tests.support.sample_tools:EchoTool", "tests.support.sample_tools.EchoTool"])
def test_loads_a_tool_class_by_path(path: str) -> None:
    tool = load_tool(path)

    assert isinstance(tool, EchoTool)
    assert tool.name == "echo"


def test_loads_a_tool_instance_as_is() -> None:
    assert load_tool("tests.support.sample_tools:echo_instance") is echo_instance


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("", "malformed tool import path"),
        ("EchoTool", "malformed tool import path"),
        ("tests.support.sample_tools:", "malformed tool import path"),
        (":EchoTool", "malformed tool import path"),
        ("tests/support/sample_tools.py:EchoTool", "malformed tool import path"),
        ("tests.support.sample_tools:Echo Tool", "malformed tool import path"),
        ("tests.support.no_such_module:EchoTool", "cannot import module 'tests.support.no_such_module'"),
        ("tests.support.sample_tools:MissingTool", "has no attribute 'MissingTool'"),
        ("json:dumps", "not a Tool subclass or instance"),
        ("tests.support.sample_tools:EchoArgs", "not a Tool subclass or instance"),
        ("tools.base:Tool", "abstract"),
        ("tests.support.sample_tools:NeedsConfigTool", "cannot be created without arguments"),
    ],
)
def test_bad_paths_raise_a_clear_value_error(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        load_tool(path)
    if path:
        assert repr(path) in str(info.value)


async def test_build_registry_adds_extra_paths() -> None:
    registry = build_registry(["tests.support.sample_tools:EchoTool", "tests.support.sample_tools.SleepTool"])

    assert [s.name for s in registry.specs()] == ["calculator", "current_time", "echo", "sleep"]
    result = await registry.execute(ToolInvocation(name="echo", arguments='{"text": "hi there"}'))
    assert (result.is_error, result.content) == (False, "hi there")


async def test_sleep_tool_bounds_are_enforced() -> None:
    registry = build_registry(["tests.support.sample_tools:SleepTool"], include_builtins=False)

    result = await registry.execute(ToolInvocation(name="sleep", arguments={"seconds": 31}))

    assert result.error_kind == "invalid_arguments"
    assert [e.field for e in result.field_errors] == ["seconds"]


def test_build_registry_rejects_duplicate_names() -> None:
    with pytest.raises(ValueError, match="duplicate tool name 'echo'"):
        build_registry(["tests.support.sample_tools:EchoTool", "tests.support.sample_tools:echo_instance"])
    with pytest.raises(ValueError, match="duplicate tool name 'calculator'"):
        build_registry(["tools.calculator:CalculatorTool"])


def test_build_registry_propagates_bad_paths() -> None:
    with pytest.raises(ValueError, match="cannot import module"):
        build_registry(["nowhere.at_all:Tool"])
