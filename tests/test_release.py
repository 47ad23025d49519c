"""Importing the original release and exporting its label pickle layout, offline on tiny fakes."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from laionet.cli import main
from laionet.errors import LaionetError
from laionet.release import export_labels, import_labels, import_release, safe_load_pickle

PART = 100_000_000
U1, U2, U3, U4, U5 = 3 * PART + 5, 7 * PART + 42, 1_200_000_123, 20 * PART + 1, 31 * PART + 12_933_523
SIM_COL = "text_to_name_def_wnid_similarity_clip-vit-base-patch32"


def fake_labels() -> dict:
    # numpy.str_ keys, numpy int64 values, a numpy array value, an empty class, and one uid under two wnids.
    return {
        np.str_("n01440764"): [np.int64(U2), np.int64(U1)],
        np.str_("n02110185"): np.array([U3], dtype=np.int64),
        "n03126707": [],
        "n04000000": [U4, 999 * PART],  # the second is in no parquet row
        "n05000000": [U4],
    }


def fake_release(tmp_path, index_name=None, protocol=4):
    uids = [U3, U1, U2, U4, U5]  # unsorted on purpose; U5 is in no label list
    frame = pd.DataFrame({
        "URL": [f"http://x/{i}.jpg" for i in range(5)],
        "TEXT": ["a tench", "another tench", "husky", "two classes", "nothing"],
        "NSFW": ["UNLIKELY"] * 5,
        "similarity": [0.3, 0.31, 0.32, 0.33, 0.34],  # LAION's own image-text cosine
        "name_def_wnid": ["q3", "q1", "q2", "q4", "q5"],
        SIM_COL: [0.9, 0.85, 0.83, 0.99, 0.95],
        "text_to_name_def_wnid_similarity_all-mpnet-base-v2": [0.6] * 5,
    }, index=pd.Index(uids, name=index_name))
    parquet = tmp_path / "laionet_v1.parquet"
    frame.to_parquet(parquet)
    labels = tmp_path / "wnid2indices_v1.pkl"
    labels.write_bytes(pickle.dumps(fake_labels(), protocol=protocol))
    return parquet, labels


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_safe_load_converts_numpy(tmp_path, protocol):
    _, labels = fake_release(tmp_path, protocol=protocol)
    loaded = safe_load_pickle(labels)
    assert loaded == {"n01440764": [U2, U1], "n02110185": [U3], "n03126707": [],
                      "n04000000": [U4, 999 * PART], "n05000000": [U4]}
    assert all(type(k) is str for k in loaded)
    assert all(type(u) is int for v in loaded.values() for u in v)


def test_safe_load_numpy1_names(tmp_path):
    # numpy 1.x wrote numpy.core.multiarray; protocol 2 names globals as plain text, easy to rewrite.
    data = pickle.dumps(fake_labels(), protocol=2)
    assert b"numpy._core.multiarray" in data
    path = tmp_path / "old.pkl"
    path.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    assert safe_load_pickle(path)["n02110185"] == [U3]


@pytest.mark.parametrize("index_name", [None, "laion_index", "uid", "index"])
def test_import_release(tmp_path, index_name):
    parquet, labels = fake_release(tmp_path, index_name)
    out = tmp_path / "out" / "laionet.parquet"
    counts = import_release(parquet, labels, out)
    assert counts == {"rows_in": 5, "labelled": 4, "unlabelled": 1, "multi_label": 1, "missing_rows": 1,
                      "rows_out": 3, "classes": 2}
    table = pq.read_table(out)
    assert table.column("uid").type == pa.int64()
    assert table.column("uid").to_pylist() == [U1, U2, U3]
    assert table.column("wnid").to_pylist() == ["n01440764", "n01440764", "n02110185"]
    assert table.column("TEXT").to_pylist() == ["another tench", "husky", "a tench"]
    assert table.column("query").to_pylist() == ["q1", "q2", "q3"]
    assert table.column("similarity").type == pa.float32()
    assert table.column("similarity").to_pylist() == pytest.approx([0.85, 0.83, 0.9])
    assert table.column(SIM_COL).to_pylist() == [0.85, 0.83, 0.9]  # the original is kept
    assert table.column("laion_similarity").to_pylist() == [0.31, 0.32, 0.3]
    assert "__index_level_0__" not in table.column_names and table.column_names.count("uid") == 1
    assert pd.read_parquet(out).shape == (3, table.num_columns)  # pandas reads it back without a stale index
    assert [p.name for p in out.parent.iterdir()] == ["laionet.parquet"]  # no temporary left behind


def test_import_release_plain_uid_column_and_chosen_similarity(tmp_path):
    parquet, labels = fake_release(tmp_path)
    plain = tmp_path / "plain.parquet"
    pq.write_table(pq.read_table(parquet).rename_columns(
        ["uid" if c == "__index_level_0__" else c for c in pq.read_schema(parquet).names]).replace_schema_metadata(),
        plain)
    out = tmp_path / "out.parquet"
    import_release(plain, labels, out, similarity_col="text_to_name_def_wnid_similarity_all-mpnet-base-v2")
    table = pq.read_table(out)
    assert table.column("uid").to_pylist() == [U1, U2, U3]
    assert table.column("similarity").to_pylist() == pytest.approx([0.6] * 3)


def test_import_labels(tmp_path):
    _, labels = fake_release(tmp_path)
    table = import_labels(labels)
    assert table.column("uid").to_pylist() == [U1, U2, U3, U4, U4, 999 * PART]
    assert table.column("wnid").to_pylist() == ["n01440764", "n01440764", "n02110185", "n04000000", "n05000000",
                                                "n04000000"]


def test_export_round_trip(tmp_path):
    parquet, labels = fake_release(tmp_path)
    dataset = tmp_path / "laionet.parquet"
    import_release(parquet, labels, dataset)
    out = tmp_path / "labels.pkl"
    counts = export_labels(dataset, out)
    assert counts == {"keys": 2, "non_empty": 2, "indices": 3}
    assert safe_load_pickle(out) == {"n01440764": [U1, U2], "n02110185": [U3]}
    with open(out, "rb") as file:
        assert pickle.load(file) == {"n01440764": [U1, U2], "n02110185": [U3]}  # a plain pickle for the notebooks

    vocab = ["n03126707", "n01440764", "n02110185"]
    export_labels(dataset, out, vocab)
    loaded = safe_load_pickle(out)
    assert list(loaded) == vocab and loaded["n03126707"] == []

    with pytest.raises(LaionetError, match="n02110185"):
        export_labels(dataset, out, ["n01440764"])


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _EvalEvil:
    def __reduce__(self):
        return (eval, ("1+1",))


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"n01440764": [1, _Evil(marker)]}))
    with pytest.raises(LaionetError, match=r"refusing to unpickle (os|posix|nt)\.system"):
        safe_load_pickle(evil)
    assert not marker.exists()

    evil.write_bytes(pickle.dumps(_EvalEvil()))
    with pytest.raises(LaionetError, match=r"refusing to unpickle builtins\.eval"):
        safe_load_pickle(evil)

    # A dotted name must not reach attributes of an allowed object.
    evil.write_bytes(b"\x80\x04\x8c\x05numpy\x8c\x0fdtype.__class__\x93.")
    with pytest.raises(LaionetError, match="refusing to unpickle numpy.dtype.__class__"):
        safe_load_pickle(evil)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", None])
def test_bad_pickles(tmp_path, content):
    path = tmp_path / "bad.pkl"
    good = pickle.dumps(fake_labels())
    path.write_bytes(good[: len(good) // 2] if content is None else content)
    with pytest.raises(LaionetError, match="bad.pkl: not a readable pickle file") as info:
        safe_load_pickle(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("obj, bad", [([1, 2], "got list"), ({"n1": [1], "n2": [1.5]}, "'n2'"),
                                      ({"n1": "abc"}, "'n1'"), ({3: [1]}, "key 3"), ({"n1": [-1]}, "'n1'"),
                                      ({"n1": np.array([1.0])}, "'n1'")])
def test_bad_shape(tmp_path, obj, bad):
    path = tmp_path / "shape.pkl"
    path.write_bytes(pickle.dumps(obj))
    with pytest.raises(LaionetError, match="shape.pkl") as info:
        safe_load_pickle(path)
    assert bad in str(info.value)


def test_cli(tmp_path):
    parquet, labels = fake_release(tmp_path)
    out = tmp_path / "laionet.parquet"
    runner = CliRunner()
    result = runner.invoke(main, ["import-release", str(parquet), str(labels), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "rows out 3" in result.output and "multi label 1" in result.output

    vocab = tmp_path / "vocab.parquet"
    pq.write_table(pa.table({"wnid": ["n01440764", "n02110185", "n03126707"], "name": ["a", "b", "c"],
                             "definition": ["d"] * 3, "match_lemmas": [["a"], ["b"], ["c"]]}), vocab)
    pkl = tmp_path / "labels.pkl"
    result = runner.invoke(main, ["export-labels", str(out), "-o", str(pkl), "--vocab", str(vocab)])
    assert result.exit_code == 0, result.output
    assert safe_load_pickle(pkl) == {"n01440764": [U1, U2], "n02110185": [U3], "n03126707": []}


@pytest.mark.parametrize("args", [
    ["import-release", "{parquet}", "{missing}"],
    ["import-release", "{parquet}", "{evil}"],
    ["import-release", "{labels}", "{labels}"],
    ["export-labels", "{labels}"],
    ["export-labels", "{parquet}"],
])
def test_cli_errors(tmp_path, args):
    parquet, labels = fake_release(tmp_path)
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps(_Evil(marker)))
    paths = {"parquet": parquet, "labels": labels, "missing": tmp_path / "nope.pkl", "evil": evil}
    argv = [a.format(**paths) for a in args] + ["-o", str(tmp_path / "out")]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("laionet: error:"), result.output
    assert not marker.exists() and not (tmp_path / "out").exists()
