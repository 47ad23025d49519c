"""The shard store's ordered concatenation, and how shard counts add up."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from laionet.io.shards import ShardStore
from laionet.runners.base import add_counts

SCHEMA = pa.schema([("uid", pa.int64()), ("wnid", pa.string())])


def shard_table(index: int, rows: int) -> pa.Table:
    return pa.table({"uid": list(range(index * 100, index * 100 + rows)), "wnid": [f"n{index:08d}"] * rows},
                    schema=SCHEMA)


@pytest.fixture
def store(tmp_path):
    store = ShardStore(tmp_path / ".out.work", ["matches"], {"test": 1})
    store.open()
    return store


def write_shards(store, sizes):
    names = [f"shard-{i:06d}" for i in range(len(sizes))]
    for index, (name, rows) in enumerate(zip(names, sizes)):
        store.write(name, {"matches": shard_table(index, rows)}, {"rows": rows})
    return names


def test_shards_are_appended_in_order_as_soon_as_their_predecessors_are_done(tmp_path, store):
    sizes = [3, 0, 5, 2, 4]
    names = write_shards(store, sizes)
    out = tmp_path / "out.parquet"
    concat = store.concatenation("matches", names, out, SCHEMA)
    concat.ready(2)
    concat.ready(4)
    assert concat.rows == 0  # shard 0 is not done: nothing can be appended yet
    concat.ready(0)
    assert concat.rows == 3  # shard 0; shard 1 is not done
    concat.ready(1)
    assert concat.rows == 3 + 0 + 5  # shards 1 (empty) and 2 follow at once; 3 is missing
    assert not out.exists()  # the growing file is in the work folder, not beside the output
    assert concat.finish() == sum(sizes)
    expected = pa.concat_tables([shard_table(i, n) for i, n in enumerate(sizes)])
    assert pq.read_table(out).equals(expected)
    assert pq.ParquetFile(out).metadata.num_rows == sum(sizes)


def test_an_aborted_concatenation_leaves_nothing(tmp_path, store):
    names = write_shards(store, [4, 4])
    out = tmp_path / "out.parquet"
    concat = store.concatenation("matches", names, out, SCHEMA)
    concat.ready(0)
    assert concat.tmp.exists()
    concat.abort()
    assert not concat.tmp.exists() and not out.exists()


def test_no_rows_still_give_a_file_with_the_schema(tmp_path, store):
    names = write_shards(store, [0, 0])
    out = tmp_path / "out.parquet"
    assert store.concatenate("matches", names, out, SCHEMA) == 0
    assert pq.read_schema(out).equals(SCHEMA) and pq.read_table(out).num_rows == 0


def test_shard_counts_add_up_with_nested_per_class_counts():
    total = {}
    add_counts(total, {"rows_in": 10, "class_counts": {"n1": 2, "n2": 1}})
    add_counts(total, {"rows_in": 5, "class_counts": {"n2": 4, "n3": 1}, "multi_label": 1})
    assert total == {"rows_in": 15, "class_counts": {"n1": 2, "n2": 5, "n3": 1}, "multi_label": 1}
