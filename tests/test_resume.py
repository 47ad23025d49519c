"""Resume: a run killed mid-way and started again gives the same output, no row lost or duplicated."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionet.io.inputs import Columns
from laionet.match.stage import MatchStage, class_counts
from laionet.pipeline import RunOptions, run_match

LAIONET = [sys.executable, "-m", "laionet"]


@pytest.fixture(scope="module")
def big_captions(tmp_path_factory, sample_parquet):
    """200k captions (the sample, repeated with shuffled words) in 20 row groups: 20 shards."""
    texts = pq.read_table(sample_parquet).column("TEXT").to_pylist()
    rng = np.random.default_rng(0)
    words = np.array(" ".join(texts).split(), dtype=object)
    lengths = rng.integers(3, 15, size=200_000)
    picks = iter(words[rng.integers(0, len(words), size=lengths.sum())])
    captions = [" ".join(next(picks) for _ in range(n)) for n in lengths]
    path = tmp_path_factory.mktemp("big") / "captions.parquet"
    pq.write_table(pa.table({"TEXT": captions}), path, row_group_size=10_000)
    return path


def test_interrupted_match_resumes_to_the_same_output(tmp_path, big_captions, paper_vocab_path, monkeypatch):
    reference = tmp_path / "reference.parquet"
    run_match([str(big_captions)], paper_vocab_path, reference, Columns(), shard_rows=10_000,
              candidates=tmp_path / "ref-candidates.parquet", run=RunOptions(progress=False, workers=1))

    calls = {"n": 0}
    original = MatchStage.process_batches

    def crash_after_five(self, tables, shard):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt
        return original(self, tables, shard)

    out = tmp_path / "matches.parquet"
    monkeypatch.setattr(MatchStage, "process_batches", crash_after_five)
    with pytest.raises(KeyboardInterrupt):
        run_match([str(big_captions)], paper_vocab_path, out, Columns(), shard_rows=10_000,
                  candidates=tmp_path / "candidates.parquet", run=RunOptions(progress=False, workers=1))
    assert not out.exists()  # nothing half-written, and no partial file left beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == [".matches.parquet.work", "ref-candidates.parquet",
                                                           "reference.parquet"]
    work = tmp_path / ".matches.parquet.work"
    assert len(list((work / "stats").glob("*.json"))) == 5

    monkeypatch.setattr(MatchStage, "process_batches", original)
    info = run_match([str(big_captions)], paper_vocab_path, out, Columns(), shard_rows=10_000,
                     candidates=tmp_path / "candidates.parquet", run=RunOptions(progress=False, workers=1))
    assert info["shards_resumed"] == 5 and info["shards"] == 20
    assert pq.read_table(out).equals(pq.read_table(reference))
    # the per-class counts, added up from the shards (5 of them from the first run), are the output's
    assert info["class_counts"] == class_counts(pq.read_table(out)) and len(info["class_counts"]) > 100
    assert pq.read_table(tmp_path / "candidates.parquet").equals(pq.read_table(tmp_path / "ref-candidates.parquet"))
    assert not work.exists()


def test_killed_process_resumes(tmp_path, big_captions, paper_vocab_path):
    """A real SIGKILL of the `laionet match` process, then the same command again."""
    reference = tmp_path / "reference.parquet"
    args = [str(big_captions), "--vocab", str(paper_vocab_path), "--shard-rows", "10000", "--workers", "1",
            "--engine", "aho-corasick", "--no-progress"]
    subprocess.run(LAIONET + ["match", *args, "-o", str(reference)], check=True, capture_output=True)

    out = tmp_path / "matches.parquet"
    stats = tmp_path / ".matches.parquet.work" / "stats"
    process = subprocess.Popen(LAIONET + ["match", *args, "-o", str(out)], stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and process.poll() is None and len(list(stats.glob("*.json"))) < 3:
        time.sleep(0.005)
    if process.poll() is not None:
        pytest.skip("the run finished before it could be killed")
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not out.exists()
    assert [p.name for p in tmp_path.glob(".matches.parquet*")] == [".matches.parquet.work"]  # no partial file
    done = len(list(stats.glob("*.json")))
    assert 3 <= done < 20
    rerun = subprocess.run(LAIONET + ["match", *args, "-o", str(out)], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert pq.read_table(out).equals(pq.read_table(reference))


def test_changed_inputs_are_not_mixed_with_partial_results(tmp_path, big_captions, paper_vocab_path, sample_parquet):
    out = tmp_path / "matches.parquet"
    work = tmp_path / ".matches.parquet.work"
    work.mkdir()
    (work / "fingerprint.json").write_text('{"stage": "match", "other": true}')
    from laionet.errors import LaionetError

    with pytest.raises(LaionetError, match="other inputs or parameters"):
        run_match([str(sample_parquet)], paper_vocab_path, out, Columns(), run=RunOptions(progress=False))
    run_match([str(sample_parquet)], paper_vocab_path, out, Columns(), run=RunOptions(progress=False, overwrite=True))
    assert out.exists()


def test_forked_workers_write_what_threads_write(tmp_path, big_captions, paper_vocab_path):
    """The paper matcher runs in forked processes when workers > 1; the output must not depend on it."""
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"matches-{workers}.parquet"
        run_match([str(big_captions)], paper_vocab_path, out, Columns(), shard_rows=10_000,
                  candidates=tmp_path / f"candidates-{workers}.parquet",
                  run=RunOptions(progress=False, workers=workers))
        outputs[workers] = (pq.read_table(out), pq.read_table(tmp_path / f"candidates-{workers}.parquet"))
    assert outputs[1][0].equals(outputs[2][0]) and outputs[1][1].equals(outputs[2][1])
    assert outputs[1][0].num_rows > 1000
