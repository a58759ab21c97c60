"""The calibrated synthetic dataset: determinism, shapes, and that its statistics are hard like real data."""

from __future__ import annotations

import gzip
import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest

from benchmarks.datasets import (
    CALIBRATED,
    REAL_MINILM_STATS,
    Dataset,
    MixtureParams,
    blobs,
    calibrated,
    default_nlist,
    generate,
    load_fashion_mnist,
    main,
    neighbour_stats,
    read_idx,
    tight,
)
from indexer.ann import exact_search

NB, NQ, D = 10_000, 200, 384  # nlist 256 (~39 per list): k-means takes about a second


@pytest.fixture(scope="module")
def small() -> Dataset:
    return calibrated(NB, NQ, D)


@pytest.fixture(scope="module")
def small_stats(small: Dataset) -> dict[str, float]:
    return neighbour_stats(small)


def test_shapes_dtypes_unit_norm(small: Dataset) -> None:
    assert small.xb.shape == (NB, D) and small.xq.shape == (NQ, D)
    assert small.xb.dtype == np.float32 and small.xq.dtype == np.float32
    assert small.xb.flags.c_contiguous and small.xq.flags.c_contiguous
    assert small.metric == "ip"
    np.testing.assert_allclose(np.linalg.norm(small.xb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(small.xq, axis=1), 1.0, atol=1e-5)


def test_same_seed_same_data_other_seed_other_data(small: Dataset) -> None:
    again = calibrated(NB, NQ, D)
    np.testing.assert_array_equal(small.xb, again.xb)
    np.testing.assert_array_equal(small.xq, again.xq)
    other = calibrated(NB, NQ, D, seed=7)
    assert not np.array_equal(small.xb, other.xb)
    assert not np.array_equal(small.xq, other.xq)


def test_base_does_not_depend_on_query_count(small: Dataset) -> None:
    fewer = calibrated(NB, 10, D)
    np.testing.assert_array_equal(small.xb, fewer.xb)


def test_queries_are_not_base_points(small: Dataset) -> None:
    best = (small.xq @ small.xb.T).max(axis=1)
    assert best.max() < 0.99


def test_stats_are_in_the_hard_real_data_band(small_stats: dict[str, float]) -> None:
    assert small_stats["nlist"] == 256 and small_stats["nq"] == NQ
    assert 0.5 < small_stats["cos_1st"] < 0.8
    assert 0.3 < small_stats["cos_kth"] < small_stats["cos_1st"]
    assert 0.05 < small_stats["cos_random"] < 0.2
    # NOT the easy-blob regime, where nprobe 8 finds nearly all of the top-100
    assert small_stats["locality_nprobe8"] < 0.95
    assert small_stats["locality_nprobe8"] < small_stats["locality_nprobe16"]
    assert small_stats["locality_nprobe16"] <= small_stats["locality_nprobe128"]


def test_easy_blobs_by_contrast_have_near_perfect_locality() -> None:
    easy = blobs(NB, NQ, D)
    assert easy.xb.shape == (NB, D) and easy.xb.dtype == np.float32
    stats = neighbour_stats(easy)
    assert stats["locality_nprobe8"] > 0.98


def test_cosines_match_a_brute_force_computation(
    small: Dataset, small_stats: dict[str, float]
) -> None:
    scores = np.sort(small.xq @ small.xb.T, axis=1)[:, ::-1]
    assert small_stats["cos_1st"] == pytest.approx(float(scores[:, 0].mean()), abs=1e-4)
    assert small_stats["cos_kth"] == pytest.approx(float(scores[:, 99].mean()), abs=1e-4)


def test_locality_is_one_when_every_list_is_probed(small: Dataset) -> None:
    stats = neighbour_stats(small, nlist=16, nprobes=(1, 16), sample_nq=50)
    assert stats["locality_nprobe16"] == 1.0
    assert stats["locality_nprobe1"] < 1.0


def test_stats_on_a_k_means_training_sample(small: Dataset) -> None:
    stats = neighbour_stats(small, nlist=64, nprobes=(8,), sample_nq=50, max_train_points=4_000)
    assert stats["train_points"] == 4_000 and stats["nq"] == 50
    assert 0.0 < stats["locality_nprobe8"] <= 1.0


def test_default_nlist_keeps_the_real_list_density() -> None:
    assert default_nlist(54_667) == 1024
    assert default_nlist(1_000_000) == 16384
    assert default_nlist(10) == 1


def test_bad_arguments_are_rejected(small: Dataset) -> None:
    with pytest.raises(ValueError, match="nprobes"):
        neighbour_stats(small, nlist=64, nprobes=(128,))
    with pytest.raises(ValueError, match="metric 'ip'"):
        neighbour_stats(Dataset("x", small.xb, small.xq, "l2", "raw"))
    with pytest.raises(ValueError, match="nb >= 1"):
        calibrated(0, 10)
    with pytest.raises(ValueError, match="point_weight"):
        MixtureParams(**{**CALIBRATED.__dict__, "point_weight": -1.0})
    with pytest.raises(ValueError, match="same d"):
        Dataset("x", small.xb, small.xq[:, :10], "ip", "mismatched")


def test_generate_with_other_params_differs() -> None:
    tight = MixtureParams(**{**CALIBRATED.__dict__, "point_weight": 0.1})
    a, b = generate(2_000, 10, 32), generate(2_000, 10, 32, params=tight)
    assert a.xb.shape == b.xb.shape == (2_000, 32)
    assert not np.array_equal(a.xb, b.xb)


def _write_idx(path: Path, data: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, data.ndim]) + struct.pack(f">{data.ndim}I", *data.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + data.astype(np.uint8).tobytes())


def test_tight_queries_pack_their_neighbours_closer_on_the_same_catalog(small: Dataset) -> None:
    tq = tight(NB, NQ, D)
    assert tq.name == f"tight-{NB}"
    np.testing.assert_array_equal(tq.xb, small.xb)  # the same catalog, other queries
    cos = {name: exact_search(ds.xb, ds.xq, 100)[0] for name, ds in (("c", small), ("t", tq))}
    # ~0.8x the calibrated cosines (1M: 0.545 / 0.429 against 0.676 / 0.534; TIGHT_STATS)
    ratio = cos["t"][:, [0, 99]].mean(axis=0) / cos["c"][:, [0, 99]].mean(axis=0)
    assert np.all((ratio > 0.75) & (ratio < 0.85)), ratio


def test_read_idx_round_trip(tmp_path: Path) -> None:
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "x-idx3-ubyte.gz", data)
    np.testing.assert_array_equal(read_idx(tmp_path / "x-idx3-ubyte.gz"), data)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01abcd")
    with pytest.raises(ValueError, match="not a uint8 IDX"):
        read_idx(tmp_path / "bad")


def test_load_fashion_mnist_from_idx_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", train)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", test)
    ds = load_fashion_mnist(tmp_path)
    assert ds is not None and ds.metric == "l2"
    assert ds.xb.shape == (6, 784) and ds.xq.shape == (2, 784) and ds.xb.dtype == np.float32
    np.testing.assert_array_equal(ds.xq[1], test[1].reshape(-1).astype(np.float32))


def test_load_fashion_mnist_absent_returns_none(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="benchmarks.datasets"):
        assert load_fashion_mnist(tmp_path) is None
    assert "train-images-idx3-ubyte.gz" in caplog.text


def test_cli_prints_a_table_and_a_json_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "stats.jsonl"
    argv = ["--nb", "3000", "--nq", "20", "--d", "64", "--nlist", "64", "--out", str(out_file)]
    assert main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[1].split() == ["stat", "synthetic", "real", "diff"]
    record = json.loads(out[-1])
    assert json.loads(out_file.read_text()) == record  # the same self-describing line, kept
    assert record["kind"] == "neighbour_stats" and record["nb"] == 3000 and record["d"] == 64
    assert record["command"].startswith("python -m benchmarks.datasets --nb 3000")
    assert record["nlist"] == 64 and record["stats"]["nq"] == 20
    assert set(record["stats"]) >= {
        "cos_1st",
        "cos_kth",
        "cos_random",
        "locality_nprobe8",
        "locality_nprobe16",
    }
    assert "locality_nprobe128" not in record["stats"]  # 128 > nlist: not measurable
    assert record["real"] == REAL_MINILM_STATS
