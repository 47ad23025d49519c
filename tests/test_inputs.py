"""Inputs: file resolution, uid schemes, shards."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionet.errors import LaionetError
from laionet.io.inputs import Columns, iter_shard, plan_inputs, read_shard

PART = "part-{:05d}-5b54c5d5-bbcf-484d-a2ce-0d6f73df1a36-c000.snappy.parquet"


def write(path, n, start=0, **kwargs):
    pq.write_table(pa.table({"TEXT": [f"caption {i}" for i in range(start, start + n)],
                             "key": list(range(1000 + start, 1000 + start + n))}), path, **kwargs)
    return path


def uids(plan, columns=None):
    return [u for shard in plan.shards for u in read_shard(shard, plan, columns).column("uid").to_pylist()]


def test_laion_parts_get_the_original_global_index(tmp_path):
    write(tmp_path / PART.format(3), 5)
    write(tmp_path / PART.format(17), 2)
    plan = plan_inputs([str(tmp_path / "part-*.parquet")])
    assert plan.uid_scheme == "laion-part"
    assert uids(plan) == [300_000_000 + i for i in range(5)] + [1_700_000_000, 1_700_000_001]


def test_other_files_get_ordinals_in_the_given_order(tmp_path):
    a, b = write(tmp_path / "b.parquet", 3), write(tmp_path / "a.parquet", 2)
    plan = plan_inputs([str(a), str(b)])
    assert plan.uid_scheme == "ordinal" and uids(plan) == [0, 1, 2, 3, 4]
    assert plan_inputs([str(tmp_path / "*.parquet")]).files == [str(b), str(a)]  # a glob is sorted


def test_id_column(tmp_path):
    plan = plan_inputs([str(write(tmp_path / "x.parquet", 4))], Columns(id="key"))
    assert plan.uid_scheme == "column" and uids(plan) == [1000, 1001, 1002, 1003]
    with pytest.raises(LaionetError, match="not integers"):
        plan_inputs([str(write(tmp_path / "y.parquet", 2))], Columns(id="TEXT"))


def test_fsspec_urls(tmp_path):
    path = write(tmp_path / "x.parquet", 3)
    plan = plan_inputs([f"file://{path}"])
    assert uids(plan) == [0, 1, 2]
    assert read_shard(plan.shards[0], plan).column("TEXT").to_pylist() == ["caption 0", "caption 1", "caption 2"]
    with pytest.raises(LaionetError, match="no such file"):
        plan_inputs([f"file://{tmp_path}/missing.parquet"])


def test_shards_cover_every_row_once(tmp_path):
    path = write(tmp_path / "x.parquet", 2_500, row_group_size=700)  # row groups 700, 700, 700, 400
    for shard_rows in (100, 700, 1000, 5000):
        plan = plan_inputs([str(path)], shard_rows=shard_rows)
        assert uids(plan) == list(range(2_500))
        assert all(s.num_rows <= max(shard_rows, 700) for s in plan.shards)
    single = write(tmp_path / "y.parquet", 1_000)  # one big row group, split into slices
    plan = plan_inputs([str(single)], shard_rows=300)
    assert [s.num_rows for s in plan.shards] == [300, 300, 300, 100]
    assert uids(plan) == list(range(1_000))


def test_directories_are_refused(tmp_path):
    with pytest.raises(LaionetError, match="is a directory"):
        plan_inputs([str(tmp_path)])


@pytest.mark.parametrize("batch_rows", [1, 7, 300, 10_000])
def test_iter_shard_gives_read_shard_in_slices(tmp_path, batch_rows):
    """The sliced reader (match's) must give exactly the rows and uids of the whole-shard reader, for
    shards of whole row groups and for slices of one big row group (a non-zero skip)."""
    grouped = write(tmp_path / "x.parquet", 2_500, row_group_size=700)
    single = write(tmp_path / "y.parquet", 1_000)
    for path, shard_rows, columns in [(grouped, 1000, Columns()), (single, 300, Columns()),
                                      (single, 300, Columns(id="key")), (grouped, 700, Columns(id="key"))]:
        plan = plan_inputs([str(path)], columns, shard_rows=shard_rows)
        for shard in plan.shards:
            for wanted in (None, ["TEXT"]):
                slices = list(iter_shard(shard, plan, wanted, batch_rows=batch_rows))
                assert all(0 < t.num_rows <= batch_rows for t in slices)
                assert pa.concat_tables(slices).equals(read_shard(shard, plan, wanted))


def test_a_file_that_cannot_be_mapped_is_read(tmp_path, monkeypatch):
    """Some FUSE mounts cannot map files: open_parquet falls back to reading them."""
    from laionet.io import inputs

    path = write(tmp_path / "x.parquet", 3)
    real = pq.ParquetFile

    def no_mmap(source, memory_map=False, **kwargs):
        if memory_map and Path(source).exists():
            raise OSError("Memory mapping file failed: No such device")
        return real(source, **kwargs)

    monkeypatch.setattr(inputs.pq, "ParquetFile", no_mmap)
    assert inputs.open_parquet(str(path)).metadata.num_rows == 3
    with pytest.raises(LaionetError, match="no such file"):
        inputs.open_parquet(str(tmp_path / "missing.parquet"))
