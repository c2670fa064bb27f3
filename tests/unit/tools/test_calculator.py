import time

import pytest

from agent.dto import ToolErrorKind, ToolInvocation
from tools import ToolFailure, ToolRegistry
from tools.calculator import CalculatorArgs, CalculatorTool


async def calc(expression: str) -> str:
    return await CalculatorTool().run(CalculatorArgs(expression=expression))


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", "7"),
        ("(1 + 2) * 3", "9"),
        ("2 ** 3 ** 2", "512"),  # right-associative
        ("-2 ** 2", "-4"),  # ** binds tighter than unary minus
        ("(-2) ** 2", "4"),
        ("--3 + +4 - -1", "8"),
        ("7 // 2", "3"),
        ("-7 // 2", "-4"),
        ("-7 % 3", "2"),
        ("10 / 4", "2.5"),
        ("6 / 3", "2.0"),  # true division always gives a float
        ("0.1 + 0.2", "0.30000000000000004"),
        ("1.5 * 4", "6.0"),
        ("2 ** -1", "0.5"),
        ("2 ** 0.5", "1.4142135623730951"),
        ("1e3 + 1", "1001.0"),
        ("-0.0", "0.0"),
        ("  12345678901234567890 * 10 ", "123456789012345678900"),
        ("2 ** 100", str(2**100)),
        ("7.5 % 2", "1.5"),
    ],
)
async def test_evaluates_arithmetic(expression: str, expected: str) -> None:
    assert await calc(expression) == expected


@pytest.mark.parametrize("expression", ["1 / 0", "1 // 0", "5 % 0", "1.0 / 0.0", "0 ** -1", "3 / (2 - 2)"])
async def test_division_by_zero_is_a_tool_failure(expression: str) -> None:
    with pytest.raises(ToolFailure, match=r"^division by zero$"):
        await calc(expression)


@pytest.mark.parametrize(
    "expression", ["9 ** 9 ** 9", "10 ** 100000", "2 ** 2 ** 2 ** 2 ** 2", "10 ** 4000", "(10 ** 3000) ** 2"]
)
async def test_huge_integer_powers_are_refused_before_computing(expression: str) -> None:
    started = time.perf_counter()
    with pytest.raises(ToolFailure, match="too large"):
        await calc(expression)
    assert time.perf_counter() - started < 0.5


async def test_large_but_allowed_power_is_exact() -> None:
    assert await calc("10 ** 3999") == "1" + "0" * 3999


@pytest.mark.parametrize(
    "expression", ["1e308 * 10", "1e999", "10.0 ** 400", "10 ** 400 * 1.5", "10 ** 300 / 10 ** -300"]
)
async def test_float_overflow_is_refused(expression: str) -> None:
    with pytest.raises(ToolFailure, match="too large"):
        await calc(expression)


async def test_negative_base_with_fractional_exponent_is_refused() -> None:
    with pytest.raises(ToolFailure, match="not a real number"):
        await calc("(-8) ** (1 / 3)")


@pytest.mark.parametrize(
    ("expression", "what"),
    [
        ("x + 1", "the name 'x'"),
        ("pi", "the name 'pi'"),
        ("abs(-1)", "a function call"),
        ("__import__('os').system('true')", "a function call"),
        ("(1).real", "attribute access"),
        ("().__class__.__bases__", "attribute access"),
        ("'1' + '2'", "a string"),
        ("b'1'", "a string"),
        ("True + 1", "the constant True"),
        ("1j * 2", "the constant 1j"),
        ("1 << 3", "the operator '<<'"),
        ("1 | 2", "the operator '|'"),
        ("not 1", "the operator 'not'"),
        ("~1", "the operator '~'"),
        ("1 < 2", "a comparison"),
        ("[1, 2]", "the syntax List"),
        ("lambda: 1", "the syntax Lambda"),
    ],
)
async def test_anything_but_numbers_and_arithmetic_is_refused(expression: str, what: str) -> None:
    with pytest.raises(ToolFailure) as info:
        await calc(expression)
    assert info.value.message.startswith(what)
    assert "only numbers and + - * / // % ** (with parentheses) are allowed" in info.value.message


async def test_caret_suggests_double_star() -> None:
    with pytest.raises(ToolFailure, match=r"'\^' is not supported; use \*\* for powers"):
        await calc("2 ^ 3")


@pytest.mark.parametrize("expression", ["1 +", "(1 + 2", "1 2", "x = 1", "import os", "1\x00"])
async def test_syntax_errors_are_reported(expression: str) -> None:
    with pytest.raises(ToolFailure, match=r"^invalid expression: "):
        await calc(expression)


async def test_deep_nesting_is_a_tool_failure() -> None:
    with pytest.raises(ToolFailure, match="nested"):
        await calc("(" * 240 + "1" + ")" * 240)


async def test_deep_unary_chain_still_evaluates() -> None:
    assert await calc("-" * 400 + "1") == "1"


async def test_through_registry_failure_is_failed_kind_with_message() -> None:
    registry = ToolRegistry([CalculatorTool()])

    ok = await registry.execute(ToolInvocation(name="calculator", arguments='{"expression": "2 * 21"}'))
    failed = await registry.execute(ToolInvocation(name="calculator", arguments='{"expression": "1/0"}'))

    assert (ok.is_error, ok.content) == (False, "42")
    assert failed.is_error
    assert failed.error_kind is ToolErrorKind.FAILED
    assert failed.content == "division by zero"


@pytest.mark.parametrize("expression", ["", "1" * 501])
async def test_expression_length_is_validated(expression: str) -> None:
    registry = ToolRegistry([CalculatorTool()])

    result = await registry.execute(ToolInvocation(name="calculator", arguments={"expression": expression}))

    assert result.error_kind is ToolErrorKind.INVALID_ARGUMENTS
    assert [e.field for e in result.field_errors] == ["expression"]
