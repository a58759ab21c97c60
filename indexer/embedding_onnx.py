"""The sentence-transformers model as an ONNX Runtime session: local export, int8, cache.

sentence-transformers' own ``backend="onnx"`` needs ``optimum-onnx``, whose newest release
(0.1.0) requires transformers < 4.58 while sentence-transformers 6.2 requires transformers >= 5:
the two cannot be installed together (and optimum-onnx 0.1.0 fails at import against
transformers 5). So this module does the same three steps itself:

    export     torch.onnx (dynamo) of the whole sentence-transformers pipeline: transformer,
               pooling and normalisation in one graph whose output is the sentence embedding
    quantise   onnxruntime.quantization.quantize_dynamic: int8 weights, one scale per output
               channel, activations quantised per batch at run time (sentence-transformers'
               ``export_dynamic_quantized_onnx_model`` with its x86 configs does the same)
    cache      ``<cache>/onnx/<model hash>/<fp32|int8>/model.onnx``, published atomically

Exporting needs torch and sentence-transformers (core dependencies) plus the ``onnx`` extra;
encoding needs onnxruntime and the model's tokenizer only. See docs/embedders.md for the
measurements behind the choices here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from indexer.durable import fsync_path
from indexer.embedding import Quantize, model_hash

logger = logging.getLogger(__name__)

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Texts tokenised (then sorted by token count) at a time: bounds memory on a 1M-ad catalog while
# keeping nearly all of the padding saved by sorting the whole input.
SORT_WINDOW = 8192
# The exported graph must reproduce the torch model (fp32) or stay close to it (int8): checked
# once per export on these texts, so a broken exporter fails loudly instead of caching bad vectors.
_CHECK_TEXTS = (
    "Waterproof fleece camp stove by Northwind & Poppy. Gear up",
    "red running shoes",
    "x",
)
_MIN_CHECK_COS = {"fp32": 0.9999, "int8": 0.95}


def cache_root() -> Path:
    """Where exported models live: $ADINDEX_CACHE_DIR, else $XDG_CACHE_HOME/adindex, else ~/.cache/adindex."""
    if env := os.environ.get("ADINDEX_CACHE_DIR"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "adindex"


def max_seq_length(model_path: Path) -> int | None:
    """The model's token limit from ``sentence_bert_config.json`` (None: the tokenizer's own)."""
    path = model_path / "sentence_bert_config.json"
    if not path.is_file():
        return None
    value = json.loads(path.read_text(encoding="utf-8")).get("max_seq_length")
    return int(value) if value is not None else None


def onnx_model_file(model_path: Path, quantize: Quantize | None) -> Path:
    """The cached ONNX file for a model and precision, exported (once, atomically) if missing."""
    precision = quantize or "fp32"
    final = cache_root() / "onnx" / model_hash(model_path) / precision
    if not (final / "model.onnx").is_file():
        source = onnx_model_file(model_path, None) if quantize else None
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{precision}-", dir=final.parent))
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; the published cache is readable by all
        try:
            t0 = time.perf_counter()
            if source is None:
                _export_fp32(model_path, tmp / "model.onnx")
            else:
                _quantize_int8(source, tmp / "model.onnx")
            _check(model_path, tmp / "model.onnx", precision)
            _write_meta(tmp, model_path, precision, time.perf_counter() - t0)
            _publish(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final / "model.onnx"


def _export_fp32(model_path: Path, out: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    logger.info("Exporting %s to ONNX (once per model; cached in %s)", model_path, out.parent)
    st = SentenceTransformer(str(model_path), device="cpu").eval()

    class Pipeline(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        def forward(
            self,
            input_ids: torch.Tensor,
            attention_mask: torch.Tensor,
            token_type_ids: torch.Tensor,
        ) -> torch.Tensor:
            features = {
                "input_ids": input_ids,
                "attention_mask": attention_mask,
                "token_type_ids": token_type_ids,
            }
            out: torch.Tensor = self.st(features)["sentence_embedding"]
            return out

    enc = st.tokenizer(list(_CHECK_TEXTS[:2]), padding=True, return_tensors="pt")
    args = tuple(enc[n] for n in INPUT_NAMES)
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    # The exporter warns about its own internals (pytree deprecations, torchvision absent):
    # nothing a caller can act on, and tests turn warnings into errors.
    with warnings.catch_warnings(), _quiet("torch.onnx", "onnx_ir", "onnxscript"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            Pipeline(),
            args,
            input_names=list(INPUT_NAMES),
            output_names=["sentence_embedding"],
            dynamic_shapes=({0: batch, 1: seq},) * len(INPUT_NAMES),
            dynamo=True,
            verbose=False,
        )
    if program is None:
        raise RuntimeError(f"torch.onnx.export returned no program for {model_path}")
    program.save(out, external_data=False)  # one file: 90 MB is far below protobuf's 2 GB limit


def _quantize_int8(source: Path, out: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logger.info("Quantising %s to int8 (dynamic, per channel)", source)
    # One scale per tensor lost too much on this model (cosine to fp32 down to ~0.91 on ad texts);
    # per output channel keeps it >= 0.97 (docs/embedders.md) and was also the faster kernel.
    # Only MatMuls with constant weights are quantised (MatMulConstBOnly, the dynamic default).
    with _quiet("root"):
        quantize_dynamic(source, out, weight_type=QuantType.QInt8, per_channel=True)


def _check(model_path: Path, onnx_file: Path, precision: str) -> None:
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(model_path), device="cpu").encode(
        list(_CHECK_TEXTS),
        convert_to_numpy=True,
        normalize_embeddings=True,
        show_progress_bar=False,
    )
    got = OnnxEncoder(model_path, onnx_file, threads=1).encode(_CHECK_TEXTS, batch_size=8)
    cos = float(np.min(np.sum(ref * got, axis=1)))
    if cos < _MIN_CHECK_COS[precision]:
        raise RuntimeError(
            f"ONNX {precision} export of {model_path} disagrees with the torch model: min cosine "
            f"{cos:.5f} < {_MIN_CHECK_COS[precision]} on {len(_CHECK_TEXTS)} check texts"
        )


def _write_meta(tmp: Path, model_path: Path, precision: str, export_s: float) -> None:
    from importlib.metadata import version

    meta = {
        "model_path": str(model_path),
        "model_hash": model_hash(model_path),
        "precision": precision,
        "export_s": round(export_s, 1),
        "software": {p: version(p) for p in ("torch", "onnx", "onnxruntime")},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (tmp / "export.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _publish(tmp: Path, final: Path) -> None:
    """fsync the files, then rename the directory into place; a concurrent exporter may win."""
    for p in tmp.iterdir():
        fsync_path(p)
    try:
        tmp.rename(final)
    except OSError:
        if not (final / "model.onnx").is_file():
            raise
        return  # another process published the same export first; ours is removed by the caller
    fsync_path(final.parent)


@contextlib.contextmanager
def _quiet(*logger_names: str) -> Iterator[None]:
    """Hide INFO/WARNING chatter of library loggers for the duration (errors still show)."""
    targets = [logging.getLogger(None if n == "root" else n) for n in logger_names]
    before = [t.level for t in targets]
    for t in targets:
        t.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for t, level in zip(targets, before, strict=True):
            t.setLevel(level)


class OnnxEncoder:
    """An exported sentence-transformers model in ONNX Runtime, with length-sorted batches.

    Args:
        model_path: the sentence-transformers directory (its tokenizer is used).
        onnx_file: the exported graph (``onnx_model_file``).
        threads: ONNX Runtime intra-op threads; None lets it use every core.
    """

    def __init__(self, model_path: Path, onnx_file: Path, *, threads: int | None = None):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or 0
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle pool threads otherwise spin and take the shared cores from FAISS and gRPC
        # workers (the same reason as OMP_WAIT_POLICY=PASSIVE in indexer/_env.py).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(
            str(onnx_file), options, providers=["CPUExecutionProvider"]
        )
        self._inputs = [i.name for i in self._session.get_inputs()]
        if not set(self._inputs) <= set(INPUT_NAMES):
            raise ValueError(f"{onnx_file}: unexpected inputs {self._inputs}; want {INPUT_NAMES}")
        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(model_path))
        self._max_length = max_seq_length(model_path) or self._tokenizer.model_max_length
        self._pad_id = int(self._tokenizer.pad_token_id or 0)
        dim = self._session.get_outputs()[0].shape[-1]
        if not isinstance(dim, int):
            raise ValueError(f"{onnx_file}: the output has no fixed dimension ({dim!r})")
        self.dimension = dim

    def encode(
        self, texts: Sequence[str], *, batch_size: int, progress: bool = False
    ) -> np.ndarray:
        """Embed texts in batches of similar token counts, so that batches pad little.

        Returns:
            Array of shape (len(texts), dimension), float32, rows of unit L2 norm, in input order.
        """
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        with tqdm(total=len(texts), disable=not progress, desc="Embedding", unit="text") as bar:
            for start in range(0, len(texts), SORT_WINDOW):
                window = [str(t) for t in texts[start : start + SORT_WINDOW]]
                enc = self._tokenizer(
                    window, truncation=True, max_length=self._max_length, padding=False
                )
                ids: list[list[int]] = enc["input_ids"]
                types: list[list[int]] = enc.get("token_type_ids") or [[0] * len(i) for i in ids]
                order = np.argsort([len(i) for i in ids], kind="stable")
                for b in range(0, len(order), batch_size):
                    rows = order[b : b + batch_size]
                    feed = self._pad([ids[r] for r in rows], [types[r] for r in rows])
                    out[start + rows] = self._session.run(None, feed)[0]
                    bar.update(len(rows))
        # The graph ends in sentence-transformers' Normalize; this only guards against rounding.
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), np.float32(1e-12))
        return out

    def _pad(self, ids: list[list[int]], types: list[list[int]]) -> dict[str, np.ndarray]:
        """Right-pad one batch to its longest row: int64 arrays of shape (batch, longest)."""
        lengths = np.array([len(i) for i in ids])
        longest = int(lengths.max())
        mask = np.arange(longest)[None, :] < lengths[:, None]
        feed = {
            "input_ids": np.full(mask.shape, self._pad_id, dtype=np.int64),
            "attention_mask": mask.astype(np.int64),
            "token_type_ids": np.zeros(mask.shape, dtype=np.int64),
        }
        feed["input_ids"][mask] = np.concatenate(ids)
        feed["token_type_ids"][mask] = np.concatenate(types)
        return {name: feed[name] for name in self._inputs}
