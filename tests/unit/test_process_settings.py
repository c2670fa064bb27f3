"""ProcessSettings: the collector thresholds every replica applies at start, from GC_THRESHOLDS."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from deployments.embedding import EmbeddingDeployment
from deployments.tool_executor import ToolExecutorDeployment
from serve_app.settings import ProcessSettings
from tests.support.fake_embedder import HashingEmbedder


@pytest.fixture(autouse=True)
def python_thresholds(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("GC_THRESHOLDS", raising=False)
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_the_default_keeps_young_passes_short_and_full_passes_rare() -> None:
    ProcessSettings(_env_file=None).apply()
    young, middle, full = gc.get_threshold()
    assert (young, middle) == (700, 10)  # Python's own young generations: passes of a few ms
    assert full == 1000  # a full pass 100 times rarer than Python's (10)


def test_the_environment_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GC_THRESHOLDS", "[700, 10, 10]")
    ProcessSettings(_env_file=None).apply()
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize("value", ["[0, 10, 10]", "[700, 10]", "[700, -1, 10]", "fast"])
def test_a_bad_value_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("GC_THRESHOLDS", value)
    with pytest.raises((ValidationError, ValueError), match="gc_thresholds"):
        ProcessSettings(_env_file=None)
    assert gc.get_threshold() == (700, 10, 10)


@pytest.mark.parametrize(
    "make", [lambda: EmbeddingDeployment(encoder=HashingEmbedder()), lambda: ToolExecutorDeployment()]
)
def test_replicas_apply_them_when_they_start(monkeypatch: pytest.MonkeyPatch, make: object) -> None:
    monkeypatch.setenv("GC_THRESHOLDS", "[1234, 5, 6]")
    make()  # type: ignore[operator]
    assert gc.get_threshold() == (1234, 5, 6)
