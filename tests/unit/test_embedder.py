"""The bundled sentence model without sentence-transformers gives the library's own vectors.

``SentenceTransformerEmbedder`` runs a mean-pooling model on ``transformers`` alone
(``MeanPoolingEncoder``, a faster replica start); these tests hold it to what
``SentenceTransformer.encode`` returns for the same model, and check that any other
pipeline still goes through the library. In bfloat16 (``precision``; ``auto`` picks it
on a CPU that computes it natively) the vectors stay within cosine 0.999 of those.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import memory.embedder as embedder_module
from memory.embedder import (
    BF16_MIN_COSINE,
    EMBEDDING_DIM,
    MeanPoolingEncoder,
    SentenceTransformerEmbedder,
    bundled_model_dir,
    cpu_has_native_bf16,
    mean_pooling_max_length,
)

TEXTS = [
    "calc: 17*23",
    "What did I say about my sister's birthday?",
    "ünïcödé テスト 🚀",
    "",
    # Longer than the model's 256 tokens: both must truncate at the same place.
    "The quick brown fox jumps over the lazy dog. " * 80,
]


@pytest.fixture(scope="module")
def library_vectors() -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(bundled_model_dir(), device="cpu")
    return model.encode(TEXTS, batch_size=len(TEXTS), normalize_embeddings=True, convert_to_numpy=True)


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(precision="float32")


@pytest.fixture(scope="module")
def bf16() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(precision="bfloat16")


def test_the_bundled_model_takes_the_transformers_path(embedder: SentenceTransformerEmbedder) -> None:
    assert mean_pooling_max_length(bundled_model_dir()) == 256
    assert isinstance(embedder.model, MeanPoolingEncoder)


def test_vectors_equal_sentence_transformers(
    embedder: SentenceTransformerEmbedder, library_vectors: np.ndarray
) -> None:
    ours = np.array(embedder.encode(TEXTS))
    assert ours.shape == (len(TEXTS), EMBEDDING_DIM)
    np.testing.assert_allclose(ours, library_vectors, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # One text at a time (no padding) gives the same vectors as the padded batch.
    alone = np.array([embedder.encode([t])[0] for t in TEXTS])
    np.testing.assert_allclose(alone, library_vectors, atol=1e-5)
    assert embedder.encode([]) == []


def _copy_model(tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(bundled_model_dir(), target)
    return target


def test_another_pooling_goes_through_the_library(tmp_path: Path, library_vectors: np.ndarray) -> None:
    from sentence_transformers import SentenceTransformer

    model = _copy_model(tmp_path)
    pooling = model / "1_Pooling" / "config.json"
    cfg = json.loads(pooling.read_text())
    cfg.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True)
    pooling.write_text(json.dumps(cfg))
    assert mean_pooling_max_length(str(model)) is None
    emb = SentenceTransformerEmbedder(str(model))
    assert isinstance(emb.model, SentenceTransformer)
    cls_vectors = np.array(emb.encode(TEXTS[:2]))
    # CLS pooling is honoured: not the mean-pooled vectors.
    assert not np.allclose(cls_vectors, library_vectors[:2], atol=1e-3)


@pytest.mark.parametrize(
    "change",
    [
        lambda m: (m / "modules.json").write_text(json.dumps(json.loads((m / "modules.json").read_text())[:2])),
        lambda m: (m / "sentence_bert_config.json").write_text('{"max_seq_length": 256, "do_lower_case": true}'),
        lambda m: (m / "config_sentence_transformers.json").write_text('{"prompts": {"query": "query: "}}'),
        lambda m: (m / "modules.json").unlink(),
    ],
    ids=["no-normalize", "lower-case", "prompts", "no-modules-file"],
)
def test_pipelines_it_does_not_reproduce_are_recognised(tmp_path: Path, change: object) -> None:
    model = _copy_model(tmp_path)
    change(model)  # type: ignore[operator]
    assert mean_pooling_max_length(str(model)) is None


def test_a_long_text_is_not_padded_into_the_short_ones_pass(embedder: SentenceTransformerEmbedder) -> None:
    """A batch of mixed lengths runs as passes of similar lengths, and each row is its own text's vector."""
    model = embedder.model
    assert isinstance(model, MeanPoolingEncoder)
    texts = [f"short message number {i}" for i in range(15)] + [TEXTS[-1]] + [f"another one, {i}" for i in range(16)]
    shapes: list[tuple[int, int]] = []
    forward = model._forward

    def recording(batch: dict[str, object]) -> object:
        shapes.append(tuple(batch["input_ids"].shape))  # type: ignore[attr-defined]
        return forward(batch)

    model._forward = recording  # type: ignore[method-assign]
    try:
        planned = np.array(embedder.encode(texts))
    finally:
        del model._forward
    assert sorted(shapes, key=lambda s: s[1])[-1] == (1, 256)  # the long text alone
    assert sum(rows for rows, _ in shapes) == len(texts)
    assert max(length for rows, length in shapes if rows > 1) < 16
    alone = np.array([embedder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(planned, alone, atol=1e-5)
    np.testing.assert_allclose(planned, model.encode_one_pass(texts), atol=1e-5)


def test_bfloat16_vectors_stay_within_a_cosine_of_float32s(
    bf16: SentenceTransformerEmbedder, library_vectors: np.ndarray
) -> None:
    assert bf16.precision == "bfloat16"
    assert isinstance(bf16.model, MeanPoolingEncoder)
    ours = np.array(bf16.encode(TEXTS))
    assert ours.dtype == np.float64 and ours.shape == (len(TEXTS), EMBEDDING_DIM)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # pooled in float32
    assert (ours * library_vectors).sum(1).min() >= BF16_MIN_COSINE
    # ... and not float32's vectors under another name.
    assert not np.allclose(ours, library_vectors, atol=1e-5)
    alone = np.array([bf16.encode([t])[0] for t in TEXTS])
    assert (alone * library_vectors).sum(1).min() >= BF16_MIN_COSINE


@pytest.mark.parametrize(
    ("flags", "native"),
    [
        ("fpu sse avx2 avx512f avx512_bf16 avx512_vnni", True),
        ("fpu sse avx2 amx_bf16 amx_tile", True),
        ("fpu sse avx2 avx512f avx512_vnni", False),  # AVX-512 without bfloat16: emulated
        ("fpu sse avx2 avx512_bf16x", False),
    ],
)
def test_native_bfloat16_is_read_from_the_cpu_flags(tmp_path: Path, flags: str, native: bool) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: {flags}\n\n")
    assert cpu_has_native_bf16(str(cpuinfo)) is native
    assert cpu_has_native_bf16(str(tmp_path / "missing")) is False


def test_auto_runs_bfloat16_only_on_a_native_cpu(monkeypatch: pytest.MonkeyPatch, library_vectors: np.ndarray) -> None:
    monkeypatch.setattr(embedder_module, "cpu_has_native_bf16", lambda: True)
    assert SentenceTransformerEmbedder().precision == "bfloat16"
    monkeypatch.setattr(embedder_module, "cpu_has_native_bf16", lambda: False)
    emb = SentenceTransformerEmbedder()
    assert emb.precision == "float32"
    np.testing.assert_allclose(np.array(emb.encode(TEXTS)), library_vectors, atol=1e-5)


def test_auto_keeps_float32_for_a_model_whose_bfloat16_vectors_drift(
    monkeypatch: pytest.MonkeyPatch, library_vectors: np.ndarray
) -> None:
    monkeypatch.setattr(embedder_module, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(embedder_module, "BF16_MIN_COSINE", 1.0001)  # no bfloat16 vector is that close
    emb = SentenceTransformerEmbedder()
    assert emb.precision == "float32"
    assert isinstance(emb.model, MeanPoolingEncoder) and emb.model.precision == "float32"
    np.testing.assert_allclose(np.array(emb.encode(TEXTS)), library_vectors, atol=1e-5)


def test_bfloat16_is_refused_for_a_model_on_the_library_path(tmp_path: Path) -> None:
    model = _copy_model(tmp_path)
    (model / "modules.json").write_text(json.dumps(json.loads((model / "modules.json").read_text())[:2]))
    with pytest.raises(ValueError, match="bfloat16 needs a mean-pooling model"):
        SentenceTransformerEmbedder(str(model), precision="bfloat16")
    assert SentenceTransformerEmbedder(str(model)).precision == "float32"  # auto


def test_loading_the_model_draws_no_progress_bar(capfd: pytest.CaptureFixture[str]) -> None:
    """A replica's stderr is its log: transformers' "Loading weights" bar would put a line
    of carriage returns among the JSON lines at every start."""
    capfd.readouterr()
    MeanPoolingEncoder(bundled_model_dir(), max_length=mean_pooling_max_length(bundled_model_dir()) or 256)
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "\r" not in err, err
