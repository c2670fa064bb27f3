"""Batches of mixed lengths: one padded pass against passes planned by length.

The Embedding gathers whatever its callers send into one batch: short chat
messages, a long memory note, a search query. One forward pass pads every text
to the batch's longest, so one 200-token note makes 31 short messages cost 200
tokens each. ``MeanPoolingEncoder.encode`` now splits a batch into passes of
similar lengths (``memory.embedder.plan_passes``); the baseline is the same
model on the same batches in one padded pass (``encode_one_pass``, what
``encode`` did before). Both run in this process, with one torch thread (a
replica's), rounds alternating, on three workloads:

- ``mixed``: batches of 32 drawn from a mix of lengths (mostly short messages,
  some long notes; the seeded mix below);
- ``uniform``: batches of 32 of the goal-4 texts (~20 tokens each), where the
  plan is one pass: what planning costs when it cannot help;
- ``one``: one short text at a time (a turn's recall on an idle Embedding).

Prints texts/s and the p50/p99 of each batch's time for both, and the ratio. ::

    python -m bench.embed_lengths              # ~2 min
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import procs
from bench.batching import TEXTS as UNIFORM

RESULTS = Path(__file__).parent / "results"
SENTENCE = (
    "the weather in my city changed every day this week and my sister asked what we should plan "
    "for her birthday dinner so I wrote down a few ideas about restaurants parks and the museum"
)
# Words per text and how often: mostly chat-sized messages, some paragraphs, a few long notes.
MIX = {4: 6, 8: 6, 12: 5, 20: 4, 35: 3, 60: 2, 120: 1, 200: 1}


def mixed_texts(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    words = SENTENCE.split(" ")
    sizes = rng.choices(list(MIX), weights=list(MIX.values()), k=count)
    return [" ".join(rng.choice(words) for _ in range(n)) for n in sizes]


def timed(encode: Callable[[list[str]], Any], batches: list[list[str]], seconds: float) -> dict[str, float]:
    """Encode ``batches`` round-robin for ``seconds``; texts/s and each batch's time."""
    times: list[float] = []
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        batch = batches[len(times) % len(batches)]
        start = time.perf_counter()
        encode(batch)
        times.append((time.perf_counter() - start) * 1000)
        done += len(batch)
    times.sort()
    return {
        "texts_per_s": round(done / (time.perf_counter() - t0), 1),
        "batches": len(times),
        "p50_ms": round(times[len(times) // 2], 2),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6, help="per round, workload and encoder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32, help="texts per batch (the Embedding's max_batch_size)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a replica's: 1)")
    parser.add_argument("--out", type=Path, default=RESULTS / "embed_lengths.json")
    a = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
    import torch

    from memory.embedder import MeanPoolingEncoder, SentenceTransformerEmbedder, plan_passes

    torch.set_num_threads(a.threads)
    embedder = SentenceTransformerEmbedder()
    model = embedder.model
    assert isinstance(model, MeanPoolingEncoder), "the bundled model takes the transformers path"
    mixed = mixed_texts(a.batch * 20)
    workloads = {
        "mixed": [mixed[i : i + a.batch] for i in range(0, len(mixed), a.batch)],
        "uniform": [UNIFORM[: a.batch]],
        "one": [["calc: 17*23"]],
    }
    lengths = [len(ids) for ids in model.tokenizer(mixed, truncation=True, max_length=model.max_length)["input_ids"]]
    by_batch = [lengths[i : i + a.batch] for i in range(0, len(lengths), a.batch)]
    plans = [plan_passes(b) for b in by_batch]
    padded_one = sum(len(b) * max(b) for b in by_batch)
    padded_planned = sum(
        len(rows) * max(b[r] for r in rows) for b, plan in zip(by_batch, plans, strict=True) for rows in plan
    )
    print(
        f"mixed: {len(mixed)} texts, {min(lengths)}-{max(lengths)} tokens (median {statistics.median(lengths)}); "
        f"{statistics.mean(len(p) for p in plans):.1f} passes per batch of {a.batch}; padded tokens "
        f"{padded_one} in one pass each, {padded_planned} planned (real {sum(lengths)})",
        flush=True,
    )
    encoders = {"one pass (before)": model.encode_one_pass, "planned passes": model.encode}
    for encode in encoders.values():
        for batches in workloads.values():
            encode(batches[0])  # warm-up
    rounds: dict[str, dict[str, list[dict[str, float]]]] = {w: {e: [] for e in encoders} for w in workloads}
    before = procs.host_speed()
    for r in range(a.rounds):
        for workload, batches in workloads.items():
            names = list(encoders) if r % 2 == 0 else list(encoders)[::-1]
            for name in names:
                result = timed(encoders[name], batches, a.seconds)
                rounds[workload][name].append(result)
                print(f"  round {r + 1} {workload:<8} {name:<18} {result}", flush=True)
    summary: dict[str, Any] = {}
    print(f"\n{'workload':<9} {'encoder':<18} {'texts/s':>8} {'p50 ms':>8} {'p99 ms':>8}   (median of rounds)")
    for workload, by_encoder in rounds.items():
        summary[workload] = {}
        for name, results in by_encoder.items():
            med = {k: statistics.median(r[k] for r in results) for k in ("texts_per_s", "p50_ms", "p99_ms")}
            summary[workload][name] = med
            print(f"{workload:<9} {name:<18} {med['texts_per_s']:>8} {med['p50_ms']:>8} {med['p99_ms']:>8}")
        new, old = (summary[workload][n]["texts_per_s"] for n in ("planned passes", "one pass (before)"))
        summary[workload]["ratio"] = round(new / old, 3)
        print(f"{'':<9} planned / one pass: {summary[workload]['ratio']}x texts/s")
    result = {
        "benchmark": "embed_lengths",
        "argv": sys.argv,
        "code": procs.code_version(),
        "machine": procs.machine(),
        "host_speed": [before, procs.host_speed()],
        "threads": a.threads,
        "batch": a.batch,
        "mixed_tokens": {"min": min(lengths), "max": max(lengths), "median": statistics.median(lengths)},
        "padded_tokens": {"one_pass": padded_one, "planned": padded_planned, "real": sum(lengths)},
        "summary": summary,
        "rounds": rounds,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
