"""`laionet thresholds`: the exact solver against brute force, golden against scipy, class counts, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from scipy.optimize import golden

from laionet.thresholds.cli import command
from laionet.thresholds.solve import exact_image_threshold, parse_text_thresholds


def _data(rows: int, seed: int, decimals: int | None = 3) -> dict[str, np.ndarray]:
    """Text and image similarities (rounded so that ties occur), some images missing, 30 classes."""
    rng = np.random.default_rng(seed)
    text = rng.uniform(0.6, 0.9, rows)
    image = 0.2 + 0.5 * (text - 0.6) + rng.normal(0, 0.05, rows)
    if decimals is not None:
        text, image = np.round(text, decimals), np.round(image, decimals)
    image[rng.random(rows) < 0.05] = np.nan
    return {"uid": np.arange(rows), "text": text, "image": image,
            "wnid": np.array([f"n{k:08d}" for k in rng.integers(0, 30, rows)])}


def _write(data: dict, path: Path) -> Path:
    pq.write_table(pa.table({"uid": pa.array(data["uid"], pa.int64()), "similarity": data["text"],
                             "image_to_query_similarity": pa.array(data["image"], from_pandas=True),
                             "wnid": data["wnid"]}), path)
    return path


def _brute(text, image, t, target, compare):
    """Best attainable |n − target| over every candidate threshold (each distinct value, and beyond both ends)."""
    op = np.greater if compare == "gt" else np.greater_equal
    values = np.unique(image[~np.isnan(image)])
    candidates = np.concatenate([values, [values[0] - 1, values[-1] + 1]])
    with np.errstate(invalid="ignore"):
        sizes = [int(np.sum(op(text, t) & op(image, c))) for c in candidates]
    return min(abs(s - target) for s in sizes)


@pytest.mark.parametrize("compare", ["gt", "ge"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_solver_is_optimal(compare, seed):
    data = _data(600, seed)
    op = np.greater if compare == "gt" else np.greater_equal
    rng = np.random.default_rng(seed + 10)
    for t in (0.6, 0.7, 0.75, 0.85):
        with np.errstate(invalid="ignore"):
            kept = data["image"][op(data["text"], t)]
        for target in [0, 1, int(rng.integers(0, 400)), 10_000]:
            i, size = exact_image_threshold(kept, target, compare)
            with np.errstate(invalid="ignore"):
                actual = int(np.sum(op(data["text"], t) & op(data["image"], i)))
            assert actual == size  # the threshold gives the size it claims
            assert abs(size - target) == _brute(data["text"], data["image"], t, target, compare)


def test_exact_hits_every_attainable_size():
    data = _data(300, 5, decimals=None)  # no ties: every size 0..m is attainable
    kept = data["image"][data["text"] > 0.7]
    m = int(np.sum(~np.isnan(kept)))
    for compare in ("gt", "ge"):
        for target in range(0, m + 1, 7):
            assert exact_image_threshold(kept, target, compare)[1] == target


def test_cli_exact_and_classes(tmp_path):
    data = _data(2000, 3)
    path = _write(data, tmp_path / "pool.parquet")
    out = tmp_path / "out"
    run = CliRunner().invoke(command, [str(path), "--text-thresholds", "0.7,0.75,0.8", "--reference", "0.8,0.3",
                                       "--write-datasets", "--compare", "gt", "-o", str(out)])
    assert run.exit_code == 0, run.output
    rows = pq.read_table(out / "thresholds.parquet").to_pylist()
    with np.errstate(invalid="ignore"):
        target = int(np.sum((data["text"] > 0.8) & (data["image"] > 0.3)))
    assert json.loads((out / "manifest.json").read_text())["stages"]["thresholds"]["target"] == target
    for row in rows:
        with np.errstate(invalid="ignore"):
            keep = (data["text"] > row["text_threshold"]) & (data["image"] > row["image_threshold"])
        assert row["rows"] == keep.sum() == row["rows_written"]
        assert abs(row["rows"] - target) == _brute(data["text"], data["image"], row["text_threshold"], target, "gt")
        assert row["classes"] == len(set(data["wnid"][keep]))
        written = pq.read_table(out / row["file"])
        assert written.num_rows == row["rows"] and not np.isnan(written.column("image_to_query_similarity")
                                                                .to_numpy()).any()
    assert rows[0]["image_threshold"] > rows[-1]["image_threshold"]  # looser text, stricter image
    assert "3 pairs" in run.output


def test_golden_reproduces_scipy(tmp_path):
    data = _data(2000, 4)
    path = _write(data, tmp_path / "pool.parquet")
    out = tmp_path / "out"
    run = CliRunner().invoke(command, [str(path), "--text-thresholds", "0.72:0.82:3", "--solver", "golden",
                                       "-o", str(out)])
    assert run.exit_code == 0, run.output
    rows = pq.read_table(out / "thresholds.parquet").to_pylist()
    with np.errstate(invalid="ignore"):
        n_ref = int(np.sum((data["text"] >= 0.82) & (data["image"] >= 0.20)))  # paper preset: >= to solve
    for row, t in zip(rows, np.linspace(0.72, 0.82, 3)):
        with np.errstate(invalid="ignore"):
            kept = data["image"][data["text"] >= t]
            expected = golden(lambda i, kept=kept: abs(n_ref - int(np.sum(kept >= i))), brack=(0.2, 1.0))
            assert row["image_threshold"] == pytest.approx(expected, abs=0)
            assert row["rows"] == int(np.sum(kept >= expected))
    # exact is never worse than golden
    run = CliRunner().invoke(command, [str(path), "--text-thresholds", "0.72:0.82:3", "-o", str(tmp_path / "x")])
    exact = pq.read_table(tmp_path / "x" / "thresholds.parquet").to_pylist()
    assert all(abs(e["rows"] - n_ref) <= abs(g["rows"] - n_ref) for e, g in zip(exact, rows))


def test_image_from_joins_by_uid(tmp_path):
    data = _data(500, 6)
    path = _write(data, tmp_path / "pool.parquet")
    order = np.random.default_rng(0).permutation(500)[:450]  # 50 rows have no zeroshot output
    pq.write_table(pa.table({"uid": pa.array(data["uid"][order], pa.int64()),
                             "image_to_query_similarity": pa.array(data["image"][order], from_pandas=True)}),
                   tmp_path / "zs.parquet")
    pq.write_table(pa.table({"uid": pa.array(data["uid"], pa.int64()), "similarity": data["text"],
                             "wnid": data["wnid"]}), path)
    out = tmp_path / "out"
    run = CliRunner().invoke(command, [str(path), "--image-from", str(tmp_path / "zs.parquet"), "--target", "100",
                                       "--text-thresholds", "0.7", "--compare", "ge", "-o", str(out)])
    assert run.exit_code == 0, run.output
    row = pq.read_table(out / "thresholds.parquet").to_pylist()[0]
    image = np.full(500, np.nan)
    image[order] = data["image"][order]
    with np.errstate(invalid="ignore"):
        assert row["rows"] == np.sum((data["text"] >= 0.7) & (image >= row["image_threshold"]))


@pytest.mark.parametrize("args, message", [
    (["--image-col", "nope"], "no image similarity column 'nope'"),
    (["--text-col", "wnid"], "not a similarity"),
    (["--text-thresholds", "a:b"], "bad --text-thresholds"),
    (["--reference", "0.8"], "bad --reference"),
])
def test_errors_are_one_line(tmp_path, args, message):
    path = _write(_data(50, 0), tmp_path / "pool.parquet")
    run = CliRunner().invoke(command, [str(path)] + args + ["-o", str(tmp_path / "out")])
    lines = [line for line in run.output.splitlines() if line.strip()]
    assert run.exit_code == 2 and len(lines) == 1 and message in lines[0], run.output
    assert not (tmp_path / "out").exists()


def test_parse_text_thresholds():
    assert parse_text_thresholds("0.72:0.82:11") == pytest.approx(list(np.linspace(0.72, 0.82, 11)))
    assert parse_text_thresholds("0.72,0.76") == [0.72, 0.76]
