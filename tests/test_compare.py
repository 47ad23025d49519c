"""`laionet compare`: per-class tests, the image bootstrap and pooled draws on synthetic similarity folders,
checked against independent plain-Python computations."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from laionet.similarity.bootstrap import bootstrap_means, class_matrix, keyed_rng
from laionet.similarity.compare import CompareOptions, compare_datasets, read_similarity_folder
from laionet.similarity.compare_cli import command


def _write_folder(folder: Path, classes: dict[str, int], spread: float, seed: int, uid_base: int = 0) -> Path:
    """A similarity folder: per class, `n` unit embeddings around a class centre; larger spread = looser class."""
    rng = np.random.default_rng(seed)
    rows = []
    uid = uid_base
    for label, n in classes.items():
        centre = rng.normal(size=16)
        e = centre / np.linalg.norm(centre) + spread * rng.normal(size=(n, 16)) / 4
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        uids = np.arange(uid, uid + n)
        uid += n
        for a in range(n):
            for b in range(a):
                rows.append((label, int(uids[a]), int(uids[b]), float(e[a] @ e[b])))
    folder.mkdir(parents=True)
    label, i, j, s = zip(*rows)
    pq.write_table(pa.table({"label": pa.array(label, pa.string()), "i_uid": pa.array(i, pa.int64()),
                             "j_uid": pa.array(j, pa.int64()), "similarity": pa.array(s, pa.float32())}),
                   folder / "pairs.parquet")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("compare")
    shared = {f"c{k:02d}": 6 + k % 7 for k in range(24)}
    loose = _write_folder(root / "loose", {**shared, "only_loose": 8, "tiny": 3}, spread=1.6, seed=1)
    tight = _write_folder(root / "tight", {**shared, "only_tight": 9, "tiny": 8}, spread=0.7, seed=2, uid_base=10_000)
    same = _write_folder(root / "same", shared, spread=1.6, seed=3, uid_base=20_000)
    return loose, tight, same


def _pairs_by_class(folder: Path) -> dict[str, list[tuple[int, int, float]]]:
    out: dict[str, list] = {}
    for row in pq.read_table(folder / "pairs.parquet").to_pylist():
        out.setdefault(row["label"], []).append((row["i_uid"], row["j_uid"], row["similarity"]))
    return out


def _slow_paper(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    return mean, 1.96 * std / math.sqrt(n - 1)


def _slow_bootstrap(pairs: list[tuple[int, int, float]], resamples: int, rng) -> list[float]:
    """Draw the images as the package does (same generator calls), then average over pairs of draws, by loop."""
    sim = {}
    for i, j, s in pairs:
        sim[(i, j)] = sim[(j, i)] = s
    uids = sorted({u for i, j, _ in pairs for u in (i, j)})
    draws = rng.integers(0, len(uids), size=(resamples, len(uids)))
    means = []
    for row in draws:
        total, count = 0.0, 0
        for a, b in itertools.combinations(row.tolist(), 2):
            if a != b:  # two draws of one image are not a pair
                total += sim[(uids[a], uids[b])]
                count += 1
        means.append(total / count if count else float("nan"))
    return means


def test_bootstrap_matches_plain_loop(folders):
    pairs = _pairs_by_class(folders[0])["c03"]
    i, j, s = (np.array(x) for x in zip(*pairs))
    fast = bootstrap_means(class_matrix(i, j, s.astype(np.float64)), 200, keyed_rng("t", 5))
    slow = _slow_bootstrap(pairs, 200, keyed_rng("t", 5))
    assert np.allclose(fast, slow, atol=1e-9)
    assert np.std(fast) > 0  # the resamples differ: not a constant


def test_bootstrap_two_images_gives_nan_when_one_is_drawn_twice():
    matrix = class_matrix(np.array([2]), np.array([1]), np.array([0.5]))
    means = bootstrap_means(matrix, 400, keyed_rng("two"))
    assert np.all((means == 0.5) | np.isnan(means)) and 100 < np.isnan(means).sum() < 300


def test_incomplete_matrix_is_an_error():
    from laionet.errors import LaionetError

    with pytest.raises(LaionetError, match="complete similarity matrix"):
        class_matrix(np.array([2, 3]), np.array([1, 1]), np.array([0.5, 0.4]))


@pytest.fixture(scope="module")
def result(folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "cmp"
    run = CliRunner().invoke(command, [str(f) for f in folders] + ["--names", "loose,tight,same", "--bootstrap",
                                                                     "300", "--seed", "4", "--no-progress",
                                                                     "-o", str(out)])
    assert run.exit_code == 0, run.output
    return out, run.output


def test_per_class_matches_plain_computation(folders, result):
    out, _ = result
    table = pq.read_table(out / "per_class.parquet").to_pylist()
    first, other = _pairs_by_class(folders[0]), _pairs_by_class(folders[1])
    rows = {r["label"]: r for r in table if r["comparison"] == "loose vs tight"}
    assert set(rows) == (set(first) & set(other))  # common classes only
    for label, row in rows.items():
        (m1, e1), (m2, e2) = _slow_paper([p[2] for p in first[label]]), _slow_paper([p[2] for p in other[label]])
        assert row["pairs_first"] == len(first[label]) and row["pairs_other"] == len(other[label])
        assert row["mean_first"] == pytest.approx(m1) and row["ci_high_first"] == pytest.approx(m1 + e1)
        assert row["diff"] == pytest.approx(m1 - m2)
        tested = min(len(first[label]), len(other[label])) >= 7
        assert row["tested"] == tested
        if tested:
            half = math.sqrt(e1 ** 2 + e2 ** 2)
            assert row["paper_low"] == pytest.approx(m1 - m2 - half)
            expected = "lower" if m1 - m2 + half < 0 else "higher" if m1 - m2 - half > 0 else "none"
            assert row["paper_significance"] == expected
        else:
            assert row["paper_low"] is None and row["boot_low"] is None
    assert not rows["tiny"]["tested"]  # 3 images = 3 pairs < 7

    # the bootstrap interval is the percentile interval of independent resamples of each dataset
    label = "c05"
    boots = []
    for name, pairs in (("loose", first[label]), ("tight", other[label])):
        boots.append(np.array(_slow_bootstrap(pairs, 300, keyed_rng("bootstrap", 4, name, label))))
    low, high = np.percentile(boots[0] - boots[1], [2.5, 97.5])
    assert rows[label]["boot_low"] == pytest.approx(low) and rows[label]["boot_high"] == pytest.approx(high)


def test_shares_and_summary(result):
    out, output = result
    table = pq.read_table(out / "per_class.parquet").to_pylist()
    summary = {(r["comparison"], r["method"]): r for r in pq.read_table(out / "summary.parquet").to_pylist()}
    for comparison in ("loose vs tight", "loose vs same"):
        tested = [r for r in table if r["comparison"] == comparison and r["tested"]]
        for method, prefix in (("paper", "paper"), ("bootstrap", "boot")):
            s = summary[(comparison, method)]
            assert s["classes"] == len(tested)
            assert s["share_lower_mean"] == pytest.approx(np.mean([r["diff"] < 0 for r in tested]))
            assert s["share_significantly_lower"] == pytest.approx(
                np.mean([r[f"{prefix}_high"] < 0 for r in tested]))
            assert s["share_significantly_higher"] == pytest.approx(
                np.mean([r[f"{prefix}_low"] > 0 for r in tested]))
    # a looser dataset is lower than a tight one in (nearly) every class, and not against its twin
    assert summary[("loose vs tight", "paper")]["share_significantly_lower"] > 0.9
    assert summary[("loose vs same", "paper")]["share_significantly_lower"] < 0.9
    # pairs are not independent: the image bootstrap is wider than the paper's interval
    width = {m: np.median([r[f"{m}_high"] - r[f"{m}_low"] for r in table if r["tested"]]) for m in ("paper", "boot")}
    assert width["boot"] > 1.5 * width["paper"]
    lines = [line for line in output.splitlines() if line.startswith("loose vs")]
    assert len(lines) == 2 and "(paper CI)" in lines[0] and "(image bootstrap)" in lines[0]
    for name in ("per_class.parquet", "summary.json", "pooled.png", "differences.png", "manifest.json"):
        assert (out / name).stat().st_size > 0
    assert json.loads((out / "manifest.json").read_text())["command"] == "compare"


def test_pooled_draws(folders, tmp_path):
    def run(name, equal):
        options = CompareOptions(names=("a", "b"), bootstrap=0, seed=1, draws_per_class=10, equal_draws=equal,
                                 progress=False)
        return compare_datasets([str(folders[0]), str(folders[1])], tmp_path / name, options)["pooled"]

    pooled, equal = run("p", False), run("e", True)
    first, other = _pairs_by_class(folders[0]), _pairs_by_class(folders[1])
    common = set(first) & set(other)
    assert pooled["classes"] == len(common)
    assert pooled["datasets"]["a"]["draws"] == sum(min(len(first[c]), 10) for c in common)
    assert equal["datasets"]["a"]["draws"] == equal["datasets"]["b"]["draws"] == sum(
        min(len(first[c]), len(other[c]), 10) for c in common)
    # the pooled mean is the mean of draws of this dataset's similarities: near the pair-weighted mean
    all_pairs = [p[2] for c in common for p in first[c]]
    assert abs(pooled["datasets"]["a"]["mean"] - np.mean(all_pairs)) < 0.05
    assert pooled["datasets"]["a"]["mean"] < pooled["datasets"]["b"]["mean"]
    assert run("again", False) == pooled  # seeded


def _error(args, tmp_path):
    run = CliRunner().invoke(command, args + ["--no-progress", "-o", str(tmp_path / "out")])
    lines = [line for line in run.output.splitlines() if line.strip()]
    assert run.exit_code == 2 and len(lines) == 1 and lines[0].startswith("laionet: error:"), run.output
    assert not (tmp_path / "out").exists()
    return lines[0]


def test_errors(folders, tmp_path):
    assert "at least two" in _error([str(folders[0])], tmp_path)
    assert "not a `laionet similarity` output" in _error([str(folders[0]), str(tmp_path)], tmp_path)
    other = _write_folder(tmp_path / "other", {"zzz": 5}, spread=1.0, seed=9)
    assert "no class in common" in _error([str(folders[0]), str(other)], tmp_path)
    assert "distinct" in _error([str(folders[0]), str(folders[1]), "--names", "a,a"], tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"label": ["x"], "sim": [0.5]}), bad / "pairs.parquet")
    assert "no column" in _error([str(folders[0]), str(bad)], tmp_path)


def test_reader_groups_by_class(folders):
    dataset = read_similarity_folder(folders[0], "loose")
    assert dataset.classes["c01"].pairs == 7 * 6 // 2 and dataset.classes["c01"].images == 7
