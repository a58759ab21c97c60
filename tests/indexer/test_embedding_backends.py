"""Embedder backends: ONNX Runtime (fp32, int8) against torch, export cache, embedder ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexer.embedding import (
    DEFAULT_BACKEND,
    DEFAULT_QUANTIZE,
    SentenceTransformerEmbedder,
    model_hash,
)

TEXTS = [
    "Waterproof fleece camp stove by Northwind & Poppy. Rated to keep you warm down to 20 degrees.",
    "110cfm bathroom exhaust fan without light",
    "Elephant & Piggie: The Complete Collection (An Elephant & Piggie Book)",
    "  leading and trailing spaces  ",
    "Ünïcödé café crème brûlée",
    "",
    "red running shoes " * 80,  # longer than the model's 256-token limit: truncated alike
]


def test_backend_arguments_are_checked_before_loading() -> None:
    with pytest.raises(ValueError, match="backend"):
        SentenceTransformerEmbedder(backend="tensorflow")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantize='int8' needs backend='onnx'"):
        SentenceTransformerEmbedder(backend="torch", quantize="int8")
    with pytest.raises(ValueError, match="threads=2 needs backend='onnx'"):
        SentenceTransformerEmbedder(backend="torch", threads=2)
    with pytest.raises(ValueError, match="batch_size"):
        SentenceTransformerEmbedder(backend="onnx", batch_size=0)


def test_model_hash_follows_weights_not_docs(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "README.md").write_text("about the model")
    before = model_hash(tmp_path)
    model_hash.cache_clear()
    (tmp_path / "README.md").write_text("reworded")
    assert model_hash(tmp_path) == before
    model_hash.cache_clear()
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    assert model_hash(tmp_path) != before
    model_hash.cache_clear()


def test_publish_keeps_the_first_export(tmp_path: Path) -> None:
    from indexer.embedding_onnx import _publish

    final = tmp_path / "int8"
    final.mkdir()
    (final / "model.onnx").write_bytes(b"first")
    tmp = tmp_path / ".int8-xyz"
    tmp.mkdir()
    (tmp / "model.onnx").write_bytes(b"second")
    (tmp / "other").write_bytes(b"makes the rename fail: the target is not empty")
    _publish(tmp, final)
    assert (final / "model.onnx").read_bytes() == b"first"


@pytest.fixture(scope="module")
def torch_embedder() -> SentenceTransformerEmbedder:
    """The reference: sentence-transformers on torch, fp32 (whatever the default backend is)."""
    return SentenceTransformerEmbedder(backend="torch")


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    return np.asarray(np.sum(a * b, axis=1))


@pytest.mark.slow
def test_onnx_backends_agree_with_torch(
    torch_embedder: SentenceTransformerEmbedder,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exported into an empty cache, fp32 reproduces torch and int8 stays close; ids differ."""
    monkeypatch.setenv("ADINDEX_CACHE_DIR", str(tmp_path))
    torch_x = torch_embedder.encode(TEXTS)
    fp32 = SentenceTransformerEmbedder(backend="onnx", threads=1, batch_size=4)
    int8 = SentenceTransformerEmbedder(backend="onnx", quantize="int8", threads=2, batch_size=4)

    assert _cosines(torch_x, fp32.encode(TEXTS)).min() > 0.9999
    cos8 = _cosines(torch_x, int8.encode(TEXTS))
    # docs/embedders.md: int8 keeps cosine >= 0.97 to torch fp32 on every ESCI and ad text
    assert cos8.min() > 0.96 and cos8.mean() > 0.98, cos8

    digest = model_hash(torch_embedder.model_path)
    assert torch_embedder.embedder_id == f"all-MiniLM-L6-v2/torch-fp32/{digest}"
    assert int8.embedder_id == f"all-MiniLM-L6-v2/onnx-int8/{digest}"
    assert len({torch_embedder.embedder_id, fp32.embedder_id, int8.embedder_id}) == 3
    published = sorted(
        p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()
    )
    assert published == [
        f"onnx/{digest}/fp32/export.json",
        f"onnx/{digest}/fp32/model.onnx",
        f"onnx/{digest}/int8/export.json",
        f"onnx/{digest}/int8/model.onnx",
    ]  # and no temp directory left behind


@pytest.mark.slow
def test_default_embedder_is_the_measured_choice(
    torch_embedder: SentenceTransformerEmbedder,
) -> None:
    """The default backend embeds like torch within the bound docs/embedders.md measured."""
    default = SentenceTransformerEmbedder()
    assert default.embedder_id.split("/")[1] == f"{DEFAULT_BACKEND}-{DEFAULT_QUANTIZE or 'fp32'}"
    bound = 0.9999 if DEFAULT_QUANTIZE is None else 0.96
    assert _cosines(torch_embedder.encode(TEXTS), default.encode(TEXTS)).min() > bound
