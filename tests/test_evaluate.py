"""`laionet evaluate`: Wilson errors, the original's accuracy definitions (spec §7.2), the input layouts
(ours, the original's CSVs and correctness parquets), OCR exclusion, class restriction and the CLI."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pandas as pd
import polars as pl
import pytest
from click.testing import CliRunner

from laionet.evaluate import evaluate
from laionet.evaluate.cli import command
from laionet.evaluate.metrics import wilson_interval

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def wnid(i: int) -> str:
    return f"n{i:08d}"


# ---- independent reference implementation, written from the spec text (§7.1, §7.2) ----

def reference_recalls(rows_wnids: dict, correct: dict, classes=None, drop=()) -> dict:
    """{class: (recall, se)} with plain loops and statsmodels, like calc_recall_per_y."""
    from statsmodels.stats.proportion import proportion_confint

    members: dict[str, list] = {}
    for key, wnids in rows_wnids.items():
        if key in drop:
            continue
        for w in wnids:
            members.setdefault(w, []).append(key)
    out = {}
    for w, keys in members.items():
        if classes is not None and w not in classes:
            continue
        values = [correct.get(key) for key in keys]
        values = [v for v in values if v is not None]
        n, c = len(values), sum(bool(v) for v in values)
        if n == 0:
            continue
        low, high = proportion_confint(c, n, alpha=0.05, method="wilson")
        out[w] = (c / n, (high - low) / 2 / 1.96)
    return out


def reference_equal(recalls: dict) -> tuple[float, float]:
    values = list(recalls.values())
    return (sum(r for r, _ in values) / len(values), math.sqrt(sum(s * s for _, s in values)) / len(values))


def reference_frequency(recalls: dict, freq: dict) -> tuple[float, float]:
    total = sum(freq.values())
    w = {y: freq.get(y, 0) / total for y in recalls}
    sw = sum(w.values())
    acc = sum(w[y] * r for y, (r, _) in recalls.items()) / sw
    se = math.sqrt(sum((s * w[y]) ** 2 for y, (_, s) in recalls.items())) / sw
    return acc, se


def table_value(accuracy: pl.DataFrame, model: str, k: int, weighting: str) -> tuple[float, float, int]:
    row = accuracy.filter((pl.col("model") == model) & (pl.col("topk") == k) & (pl.col("weighting") == weighting))
    assert row.height == 1
    return row["accuracy"][0], row["se"][0], row["classes"][0]


# ---- fixtures: a random dataset with missing predictions ----

@pytest.fixture(scope="module")
def random_case(tmp_path_factory):
    rng = random.Random(7)
    folder = tmp_path_factory.mktemp("evaluate")
    classes = [wnid(i) for i in range(25)]
    uids = [i * 3 + 100_000_000 for i in range(1500)]
    labels = {u: [rng.choice(classes[:22])] for u in uids}  # 3 classes never labelled
    labels[uids[0]] = [classes[0], classes[1]]  # a multi-label row (the original allowed a set)
    flagged = {u for u in uids if rng.random() < 0.05}
    pl.DataFrame({"uid": uids, "wnid": [labels[u] for u in uids],
                  "wnid_is_in_recognized_text": [u in flagged for u in uids]}).write_parquet(folder / "ds.parquet")

    rows, top5 = [], {}
    for model in ("alpha", "beta"):
        for u in uids:
            if rng.random() < 0.12:  # no prediction: a failed download, or a missing row
                if rng.random() < 0.5:
                    rows.append({"uid": u, "model": model, "top5": None, "status": "fetch_error", "error": "404"})
                continue
            pred = rng.sample(classes, 5)
            if rng.random() < 0.5:
                pred[rng.randrange(5)] = labels[u][0]
                pred = list(dict.fromkeys(pred))
            top5[(model, u)] = pred
            rows.append({"uid": u, "model": model, "top5": pred, "status": "ok", "error": None})
    # class 5 gets no prediction at all for beta: it must be skipped, not counted as 0
    rows = [r for r in rows if not (r["model"] == "beta" and labels[r["uid"]] == [classes[5]])]
    top5 = {k: v for k, v in top5.items() if not (k[0] == "beta" and labels[k[1]] == [classes[5]])}
    schema = {"uid": pl.Int64, "model": pl.String, "top5": pl.List(pl.String), "status": pl.String,
              "error": pl.String}
    pl.DataFrame(rows, schema=schema).write_parquet(folder / "predictions.parquet")

    # frequency weights from a bigger "full" dataset; class 3 has none (weight 0), class 24 is extra
    weights = {y: rng.randint(1, 300) for y in classes if y != classes[3]}
    pl.DataFrame({"wnid": [y for y, f in weights.items() for _ in range(f)]}).write_parquet(folder / "full.parquet")
    return {"folder": folder, "labels": labels, "flagged": flagged, "top5": top5, "weights": weights,
            "classes": classes}


def reference_correct(case, model: str, k: int) -> dict:
    out = {}
    for u, wnids in case["labels"].items():
        pred = case["top5"].get((model, u))
        out[u] = None if pred is None else any(p in wnids for p in pred[:k])
    return out


# ---- Wilson ----

def test_wilson_matches_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    pairs = [(c, n) for n in (1, 2, 3, 5, 10, 49, 50, 51, 137, 1000, 12345) for c in sorted({0, 1, n // 3, n - 1, n})]
    counts, nobs = np.array(pairs).T
    low, high = wilson_interval(counts, nobs)
    ref_low, ref_high = proportion_confint(counts, nobs, alpha=0.05, method="wilson")
    np.testing.assert_allclose(low, ref_low, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(high, ref_high, rtol=1e-12, atol=1e-15)
    assert np.all(np.isnan(wilson_interval([0], [0])[0]))  # n = 0: no interval (the class is skipped)


# ---- accuracy definitions against the independent reference ----

@pytest.mark.parametrize("k", [1, 5])
def test_equal_and_frequency_accuracy_match_reference(random_case, k):
    folder = random_case["folder"]
    result = evaluate([folder / "predictions.parquet"], folder / "ds.parquet", weights=folder / "full.parquet")
    for model in ("alpha", "beta"):
        recalls = reference_recalls(random_case["labels"], reference_correct(random_case, model, k),
                                    drop=random_case["flagged"])
        acc, se, classes = table_value(result.accuracy, model, k, "equal")
        ref_acc, ref_se = reference_equal(recalls)
        assert classes == len(recalls)
        assert acc == pytest.approx(ref_acc, rel=1e-12) and se == pytest.approx(ref_se, rel=1e-12)
        acc, se, classes = table_value(result.accuracy, model, k, "frequency")
        ref_acc, ref_se = reference_frequency(recalls, random_case["weights"])
        assert classes == len([y for y in recalls if random_case["weights"].get(y, 0) > 0])
        assert acc == pytest.approx(ref_acc, rel=1e-12) and se == pytest.approx(ref_se, rel=1e-12)

        per_class = result.per_class.filter((pl.col("model") == model) & (pl.col("topk") == k))
        got = {w: (r, s) for w, r, s in per_class.select("wnid", "recall", "se").iter_rows()}
        assert got.keys() == recalls.keys()
        for y, (r, s) in recalls.items():
            assert got[y][0] == pytest.approx(r, rel=1e-12) and got[y][1] == pytest.approx(s, rel=1e-12)
    beta = result.per_class.filter(pl.col("model") == "beta")
    assert wnid(5) not in beta["wnid"].to_list()  # no prediction at all: skipped, not a recall of 0
    assert result.per_class.filter(pl.col("wnid") == wnid(3))["weight"].to_list() == [0.0] * 4


def test_default_weights_are_the_dataset_counts_before_ocr_exclusion(random_case):
    folder = random_case["folder"]
    result = evaluate([folder / "predictions.parquet"], folder / "ds.parquet")
    freq: dict[str, int] = {}
    for wnids in random_case["labels"].values():
        for w in wnids:
            freq[w] = freq.get(w, 0) + 1
    recalls = reference_recalls(random_case["labels"], reference_correct(random_case, "alpha", 1),
                                drop=random_case["flagged"])
    acc, se, _ = table_value(result.accuracy, "alpha", 1, "frequency")
    ref_acc, ref_se = reference_frequency(recalls, freq)
    assert acc == pytest.approx(ref_acc, rel=1e-12) and se == pytest.approx(ref_se, rel=1e-12)


def test_ocr_flagged_rows_are_dropped_unless_kept(random_case):
    folder = random_case["folder"]
    dropped = evaluate([folder / "predictions.parquet"], folder / "ds.parquet")
    kept = evaluate([folder / "predictions.parquet"], folder / "ds.parquet", keep_ocr_flagged=True)
    assert dropped.info["counts"]["rows_ocr_flagged_dropped"] == len(random_case["flagged"])
    assert kept.info["counts"]["rows_ocr_flagged_dropped"] == 0
    n = {name: r.per_class.filter((pl.col("model") == "alpha") & (pl.col("topk") == 1))["n"].sum()
         for name, r in (("dropped", dropped), ("kept", kept))}
    flagged_predicted = sum(1 for u in random_case["flagged"] if ("alpha", u) in random_case["top5"])
    assert n["kept"] - n["dropped"] == flagged_predicted > 0
    recalls = reference_recalls(random_case["labels"], reference_correct(random_case, "alpha", 1))
    acc, _, _ = table_value(kept.accuracy, "alpha", 1, "equal")
    assert acc == pytest.approx(reference_equal(recalls)[0], rel=1e-12)


def test_classes_from_restricts_to_the_shared_classes(random_case, tmp_path):
    folder = random_case["folder"]
    pl.DataFrame({"wnid": [wnid(i) for i in range(0, 15)], "name": "x"}).write_parquet(tmp_path / "vocab.parquet")
    (tmp_path / "keys.txt").write_text("# LAIONet keys\n" + "\n".join(f"{wnid(i)}: lemma" for i in range(5, 25)))
    result = evaluate([folder / "predictions.parquet"], folder / "ds.parquet",
                      classes_from=[tmp_path / "vocab.parquet", tmp_path / "keys.txt"])
    shared = {wnid(i) for i in range(5, 15)}
    assert set(result.per_class["wnid"].unique().to_list()) == shared
    assert result.info["classes"]["evaluated"] == len(shared)
    recalls = reference_recalls(random_case["labels"], reference_correct(random_case, "alpha", 1), classes=shared,
                                drop=random_case["flagged"])
    acc, se, classes = table_value(result.accuracy, "alpha", 1, "equal")
    assert classes == len(shared)
    assert (acc, se) == pytest.approx(reference_equal(recalls), rel=1e-12)


def test_multilabel_row_counts_for_each_of_its_classes(tmp_path):
    pl.DataFrame({"uid": [1, 2], "wnid": [[wnid(0), wnid(1)], [wnid(1)]]}).write_parquet(tmp_path / "ds.parquet")
    pl.DataFrame({"uid": [1, 2], "model": "m", "top5": [[wnid(1), wnid(7)], [wnid(7), wnid(1)]],
                  "status": "ok", "error": None}).write_parquet(tmp_path / "p.parquet")
    result = evaluate([tmp_path / "p.parquet"], tmp_path / "ds.parquet")
    top1 = {w: (n, c) for w, n, c in result.per_class.filter(pl.col("topk") == 1)
            .select("wnid", "n", "correct").iter_rows()}
    assert top1 == {wnid(0): (1, 1), wnid(1): (2, 1)}  # row 1 is right for both of its classes


# ---- the original's files ----

def write_original_csv(path, index, preds):
    frame = pd.DataFrame(preds, index=index)
    frame.to_csv(path)  # the original's layout: an unnamed index column, then columns 0..4


def test_original_csvs_dedup_keep_first_with_file_name_index(tmp_path):
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 7)]
    pd.DataFrame({"wnid": [wnid(i % 2) for i in range(6)]}, index=pd.Index(names)).to_parquet(
        tmp_path / "imagename2wnid.parquet")
    right = [[wnid(i % 2)] + [wnid(9)] * 4 for i in range(6)]
    wrong = [[wnid(9)] * 5 for _ in range(6)]
    first = tmp_path / "ILSVRC2012_val_vit-base-patch16-224_predictions_05-03-2023_10-00-00.csv"
    second = tmp_path / "ILSVRC2012_val_vit-base-patch16-224_predictions_01-04-2023_09-00-00.csv"
    write_original_csv(first, names[:4], right[:4])  # rows 1-4 right
    write_original_csv(second, names[2:], wrong[2:])  # rows 3-6 wrong; 3 and 4 are duplicates
    result = evaluate([first, second], tmp_path / "imagename2wnid.parquet")
    acc = {(r["topk"], r["weighting"]): r["accuracy"] for r in result.accuracy.to_dicts()}
    assert result.accuracy["model"].unique().to_list() == ["vit-base-patch16-224"]
    assert acc[(1, "equal")] == pytest.approx(4 / 6)  # duplicates keep the first file's prediction
    assert result.info["models"]["vit-base-patch16-224"]["duplicates"] == 2

    # a folder is read in time-stamp order (05-03 before 01-04, though the names sort the other way)
    (tmp_path / "csvs").mkdir()
    for path in (first, second):
        path.rename(tmp_path / "csvs" / path.name)
    folder = evaluate([tmp_path / "csvs"], tmp_path / "imagename2wnid.parquet")
    assert folder.accuracy["accuracy"].to_list() == result.accuracy["accuracy"].to_list()

    # the command takes several inputs after one --predictions, in the order given
    files = [str(tmp_path / "csvs" / p.name) for p in (first, second)]
    cli = CliRunner().invoke(command, ["--predictions", *files, "--dataset", str(tmp_path / "imagename2wnid.parquet"),
                                       "-o", str(tmp_path / "out")])
    assert cli.exit_code == 0, cli.output
    assert pl.read_parquet(tmp_path / "out" / "accuracy.parquet")["accuracy"].to_list() == \
        result.accuracy["accuracy"].to_list()


def test_original_csv_integer_index_and_model_option(tmp_path):
    pl.DataFrame({"uid": [10, 20, 30], "wnid": [wnid(0), wnid(1), wnid(1)]}).write_parquet(tmp_path / "ds.parquet")
    write_original_csv(tmp_path / "preds.csv", [10, 20, 40], [[wnid(0)] * 5, [wnid(0)] * 5, [wnid(1)] * 5])
    result = evaluate([tmp_path / "preds.csv"], tmp_path / "ds.parquet", model="resnet-50")
    assert result.info["models"]["resnet-50"]["without_label"] == 1  # uid 40 is not in the dataset
    assert result.info["models"]["resnet-50"]["rows_without_prediction"] == 1  # uid 30
    assert table_value(result.accuracy, "resnet-50", 1, "equal")[0] == pytest.approx((1.0 + 0.0) / 2)


def test_golden_ilsvrc_val_correctness_parquet(tmp_path):
    """The original's ILSVRC2012_val.parquet layout: per-sample nullable correctness, index = file name.

    The real file is not available here. With it, imagename2wnid.pkl and the 977 classes shared with
    LAIONet's label keys, the expected values are: vit-base-patch16-224 top-1 = 0.804245965119522,
    se 0.0016771983464303189; clip-vit-base-patch32 top-1 = 0.5623950870010236 (spec §10.2, §12.2).
    """
    rng = np.random.default_rng(3)
    classes = [wnid(i) for i in range(40)]
    names = [f"ILSVRC2012_val_{i:08d}.JPEG" for i in range(1, 2001)]
    truth = {name: classes[i % 40] for i, name in enumerate(names)}
    frame = pd.DataFrame(index=pd.Index(names))
    frame["name_def_wnid"] = "query"
    for model, p in (("clip-vit-base-patch32", 0.56), ("vit-base-patch16-224", 0.8)):
        for k in (1, 5):
            values = pd.array(rng.random(len(names)) < p + (0.15 if k == 5 else 0), dtype="boolean")
            values[rng.random(len(names)) < 0.02] = pd.NA  # non-RGB images: no prediction
            frame[f"top_{k}_is_correct_{model}"] = values
    frame.loc[[n for n in names if truth[n] == classes[7]], "top_1_is_correct_clip-vit-base-patch32"] = pd.NA
    frame.to_parquet(tmp_path / "ILSVRC2012_val.parquet")  # stores the index as __index_level_0__
    pd.DataFrame({"imagename": names, "wnid": [truth[n] for n in names]}).to_csv(
        tmp_path / "imagename2wnid.csv", index=False)
    keys = classes[2:]  # the classes shared with LAIONet's label keys (977 of 1000 in the paper)
    (tmp_path / "laionet_keys.txt").write_text("\n".join(keys) + "\n")

    result = evaluate([tmp_path / "ILSVRC2012_val.parquet"], tmp_path / "imagename2wnid.csv",
                      classes_from=[tmp_path / "laionet_keys.txt"])

    # calc_recall_per_y + calc_equi_acc, in pandas, as the notebooks did
    from statsmodels.stats.proportion import proportion_confint

    y2names = {y: [n for n in names if truth[n] == y] for y in keys}
    for model in ("clip-vit-base-patch32", "vit-base-patch16-224"):
        for k in (1, 5):
            column = frame[f"top_{k}_is_correct_{model}"]
            recalls, ses = [], []
            for y in keys:
                values = column.loc[y2names[y]]
                n, c = int(values.notna().sum()), int(values.fillna(False).sum())
                if n == 0:
                    continue
                low, high = proportion_confint(c, n, alpha=0.05, method="wilson")
                recalls.append(c / n)
                ses.append((high - low) / 2 / 1.96)
            acc, se, classes_used = table_value(result.accuracy, model, k, "equal")
            assert classes_used == len(recalls)
            assert acc == pytest.approx(np.mean(recalls), rel=1e-12)
            assert se == pytest.approx(np.sqrt(np.sum(np.square(ses))) / len(ses), rel=1e-12)
    assert table_value(result.accuracy, "clip-vit-base-patch32", 1, "equal")[2] == 37  # class 7 has no values


def test_label_pickle_and_imagename2wnid_pickle(tmp_path):
    import pickle

    with open(tmp_path / "labels.pkl", "wb") as f:
        pickle.dump({wnid(0): [5, 6], wnid(1): [7], wnid(2): []}, f, protocol=2)
    with open(tmp_path / "imagename2wnid.pkl", "wb") as f:
        pickle.dump({"a.JPEG": wnid(0), "b.JPEG": wnid(1)}, f)
    pl.DataFrame({"uid": [5, 6, 7], "model": "m", "top5": [[wnid(0)], [wnid(1)], [wnid(1)]], "status": "ok",
                  "error": None}).write_parquet(tmp_path / "p.parquet")
    result = evaluate([tmp_path / "p.parquet"], tmp_path / "labels.pkl", weights=tmp_path / "labels.pkl")
    assert table_value(result.accuracy, "m", 1, "equal")[0] == pytest.approx((0.5 + 1.0) / 2)
    assert table_value(result.accuracy, "m", 1, "frequency")[0] == pytest.approx((2 * 0.5 + 1 * 1.0) / 3)
    pd.DataFrame({"top_1_is_correct_m": pd.array([True, False], dtype="boolean")},
                 index=pd.Index(["a.JPEG", "b.JPEG"])).to_parquet(tmp_path / "c.parquet")
    other = evaluate([tmp_path / "c.parquet"], tmp_path / "imagename2wnid.pkl")
    assert table_value(other.accuracy, "m", 1, "equal")[0] == pytest.approx(0.5)
    # --classes-from a label pickle: its keys, empty ones included (the original's 978 keys)
    with open(tmp_path / "keys.pkl", "wb") as f:
        pickle.dump({wnid(1): [], wnid(2): [1]}, f)
    restricted = evaluate([tmp_path / "c.parquet"], tmp_path / "imagename2wnid.pkl",
                          classes_from=[tmp_path / "keys.pkl"])
    assert restricted.per_class["wnid"].to_list() == [wnid(1)]
    assert other.accuracy.filter(pl.col("topk") == 5).height == 0  # no top-5 column: no top-5 rows


# ---- the command ----

def test_cli_end_to_end_with_compare(random_case, tmp_path):
    folder = random_case["folder"]
    runner = CliRunner()
    imagenet = tmp_path / "imagenet"
    args = ["--predictions", str(folder / "predictions.parquet"), "--dataset", str(folder / "ds.parquet")]
    first = runner.invoke(command, args + ["--name", "ImageNet", "-o", str(imagenet)])
    assert first.exit_code == 0, first.output
    laionet = tmp_path / "laionet"
    result = runner.invoke(command, args + ["--weights", str(folder / "full.parquet"), "--name", "LAIONet",
                                            "--compare", str(imagenet), "-o", str(laionet)])
    assert result.exit_code == 0, result.output
    assert "top-1 equal" in result.stdout and "alpha" in result.stdout and "beta" in result.stdout
    for out in (imagenet, laionet):
        files = {p.name for p in out.iterdir()}
        assert files == {"accuracy.parquet", "accuracy.json", "per_class.parquet", "accuracy.png", "manifest.json"}
        png = (out / "accuracy.png").read_bytes()
        assert png.startswith(PNG_MAGIC) and len(png) > 1000
    accuracy = pl.read_parquet(laionet / "accuracy.parquet")
    assert accuracy.columns == ["model", "topk", "weighting", "accuracy", "se", "classes", "dataset"]
    assert accuracy.height == 8 and set(accuracy["dataset"]) == {"LAIONet"}
    assert json.loads((laionet / "accuracy.json").read_text()) == accuracy.to_dicts()
    per_class = pl.read_parquet(laionet / "per_class.parquet")
    assert per_class.columns == ["model", "topk", "wnid", "n", "correct", "recall", "se", "weight"]
    manifest = json.loads((laionet / "manifest.json").read_text())
    assert manifest["command"] == "evaluate"
    assert manifest["stages"]["evaluate"]["models"]["alpha"]["rows_evaluated"] > 0


@pytest.mark.parametrize("case", ["missing_dataset", "missing_column", "bad_compare", "not_predictions",
                                  "csv_without_model", "corrupt_parquet"])
def test_cli_bad_input_is_one_line_error(random_case, tmp_path, case):
    folder = random_case["folder"]
    preds, dataset = str(folder / "predictions.parquet"), str(folder / "ds.parquet")
    extra = []
    if case == "missing_dataset":
        dataset = str(tmp_path / "nope.parquet")
    elif case == "missing_column":
        pl.DataFrame({"uid": [1], "label": ["x"], "other": [1]}).write_parquet(tmp_path / "d.parquet")
        dataset = str(tmp_path / "d.parquet")
    elif case == "bad_compare":
        extra = ["--compare", str(tmp_path)]
    elif case == "not_predictions":
        preds = dataset
    elif case == "csv_without_model":
        write_original_csv(tmp_path / "preds.csv", [1], [[wnid(0)] * 5])
        preds = str(tmp_path / "preds.csv")
    elif case == "corrupt_parquet":
        (tmp_path / "bad.parquet").write_bytes(b"not a parquet file")
        preds = str(tmp_path / "bad.parquet")
    out = tmp_path / "out"
    result = CliRunner().invoke(command, ["-p", preds, "-d", dataset, "-o", str(out)] + extra)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("laionet: error:"), result.output
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir())  # nothing half-written
