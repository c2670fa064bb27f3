"""``plan_passes``: a batch of mixed lengths split into forward passes of similar lengths."""

from __future__ import annotations

import itertools
import random

import pytest

from memory.embedder import PASS_OVERHEAD_TOKENS, plan_passes


def cost(lengths: list[int], passes: list[list[int]], overhead: int = PASS_OVERHEAD_TOKENS) -> int:
    return sum(overhead + len(rows) * max(lengths[i] for i in rows) for rows in passes)


def brute_force_least_cost(lengths: list[int], overhead: int = PASS_OVERHEAD_TOKENS) -> int:
    """Every way to cut the sorted batch into consecutive passes."""
    ordered = sorted(lengths)
    best = None
    for cuts in itertools.product([False, True], repeat=len(ordered) - 1):
        total, start = 0, 0
        for end, cut in enumerate([*cuts, True], start=1):
            if cut:
                total += overhead + (end - start) * ordered[end - 1]
                start = end
        best = total if best is None else min(best, total)
    assert best is not None
    return best


def test_an_empty_batch_has_no_pass() -> None:
    assert plan_passes([]) == []


@pytest.mark.parametrize("lengths", [[7], [20] * 32, [12, 14, 13, 15, 16, 12, 20, 18]])
def test_similar_lengths_stay_one_pass(lengths: list[int]) -> None:
    assert plan_passes(lengths) == [sorted(range(len(lengths)), key=lengths.__getitem__)]


def test_a_long_text_among_short_ones_gets_a_pass_of_its_own() -> None:
    lengths = [10] * 15 + [256] + [12] * 16
    passes = plan_passes(lengths)
    assert passes[-1] == [15]
    assert sorted(i for rows in passes[:-1] for i in rows) == [i for i in range(32) if i != 15]
    assert cost(lengths, passes) < cost(lengths, [list(range(32))]) / 5


def test_every_text_is_in_exactly_one_pass_shortest_first() -> None:
    rng = random.Random(3)
    for _ in range(200):
        lengths = [rng.choice([3, 6, 9, 14, 30, 64, 128, 256]) for _ in range(rng.randint(1, 64))]
        passes = plan_passes(lengths)
        assert sorted(i for rows in passes for i in rows) == list(range(len(lengths)))
        flat = [lengths[i] for rows in passes for i in rows]
        assert flat == sorted(flat)


def test_the_plan_is_the_cheapest_cut() -> None:
    rng = random.Random(5)
    for _ in range(150):
        lengths = [rng.randint(2, 256) for _ in range(rng.randint(1, 11))]
        assert cost(lengths, plan_passes(lengths)) == brute_force_least_cost(lengths)


def test_a_higher_overhead_means_fewer_passes() -> None:
    lengths = [4, 8, 16, 32, 64, 128, 256]
    counts = [len(plan_passes(lengths, overhead_tokens=o)) for o in (0, 40, 400, 100_000)]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] == len(lengths)
    assert counts[-1] == 1
