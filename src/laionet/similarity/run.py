"""`laionet similarity`: intra-class image-image cosine similarities (spec §8).

Per class (the `label_col` of the dataset, `wnid` by default): a seeded random sample of at most `per_class`
rows (the original took the FIRST 100 in set order, spec §11.8), sorted by uid; the images are embedded
(failures are skipped and counted), L2-normalised, S = E·Eᵀ, and the strict lower triangle (the n(n−1)/2
pairs without the diagonal, spec §8.4) is kept.

Encoders are those of `laionet embed` (`laionet.embed.image_encoders`): timm:NAME (pooled pre-logits
features, no head), hf:NAME_OR_PATH (a transformers backbone; its pooler only when its weights were loaded,
else the CLS token: the original's "vit*" used a randomly initialised pooler, spec §11.22), hf-clip:NAME
and open-clip:ARCH/PRETRAINED (CLIP image embeddings).

With `embeddings` (a `laionet embed` folder), the sampled uids' precomputed embeddings are used instead of
downloading and encoding; sampled uids without one count as failed (`missing_embedding`).

Resume: classes are processed in groups (`classes_per_shard`), each group saved as it finishes in a work
folder beside OUT (`.OUT.work`, fingerprinted: a rerun with other inputs or parameters is refused); a rerun
skips finished groups, and the outputs are assembled when all are done.

Outputs in the folder OUT:

    pairs.parquet     label (string), i_uid, j_uid (int64), similarity (float32): one row per pair, i_uid > j_uid
    classes.parquet   label, sampled (rows drawn), failed (images that could not be embedded), n (images
                      embedded), pairs = n(n−1)/2, mean_similarity, std (population, ddof=0), ci_low, ci_high
                      = mean ∓ 1.96·std/√(pairs−1) (spec §8.4; null with fewer than 2 pairs)
    manifest.json
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from laionet.embed.image_encoders import check_image_embedder, l2_normalise, load_image_embedder
from laionet.errors import LaionetError
from laionet.predict.run import _iter_images, read_items

PAIRS = "pairs.parquet"
CLASSES = "classes.parquet"
MANIFEST = "manifest.json"
Z = 1.96

PAIRS_SCHEMA = pa.schema([("label", pa.string()), ("i_uid", pa.int64()), ("j_uid", pa.int64()),
                          ("similarity", pa.float32())])
CLASSES_SCHEMA = pa.schema([("label", pa.string()), ("sampled", pa.int64()), ("failed", pa.int64()),
                            ("n", pa.int64()), ("pairs", pa.int64()), ("mean_similarity", pa.float64()),
                            ("std", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64())])


@dataclass(frozen=True)
class SimilarityOptions:
    encoder: str | None
    checkpoint: str | None = None
    label_col: str = "wnid"
    per_class: int = 100
    seed: int = 0
    batch_size: int = 64
    device: str | None = None
    precision: str = "auto"
    labels: str | None = None
    image_col: str | None = None
    fetch: object | None = None
    progress: bool = True
    embeddings: str | None = None  # a `laionet embed` folder used instead of embedding the images
    classes_per_shard: int = 16  # the unit of resume
    overwrite: bool = False


def class_rng(seed: int, label: str) -> np.random.Generator:
    """A generator that depends only on (seed, label): the same sample whatever the other classes are."""
    digest = hashlib.sha256(f"{int(seed)}\x00{label}".encode("utf-8", "surrogatepass")).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def sample_class(uids: np.ndarray, label: str, per_class: int, seed: int) -> np.ndarray:
    """At most `per_class` of `uids`, drawn without replacement, returned sorted."""
    uids = np.sort(np.asarray(uids, dtype=np.int64))
    if len(uids) <= per_class:
        return uids
    return np.sort(class_rng(seed, label).choice(uids, size=per_class, replace=False))


def lower_triangle(embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, S[i, j]) for i > j of S = E·Eᵀ."""
    sims = embeddings @ embeddings.T
    i, j = np.tril_indices(len(embeddings), k=-1)
    return i, j, sims[i, j].astype(np.float32)


def summarise(values: np.ndarray) -> dict:
    """mean, std and the paper's interval mean ± 1.96·std/√(pairs−1) (spec §8.4)."""
    pairs = len(values)
    if pairs == 0:
        return {"pairs": 0, "mean_similarity": None, "std": None, "ci_low": None, "ci_high": None}
    values = values.astype(np.float64)
    mean, std = float(values.mean()), float(values.std())
    half = Z * std / np.sqrt(pairs - 1) if pairs > 1 else None
    return {"pairs": pairs, "mean_similarity": mean, "std": std,
            "ci_low": mean - half if half is not None else None, "ci_high": mean + half if half is not None else None}


def read_labelled_items(dataset: str, label_col: str, labels: str | None, image_col: str | None) -> pa.Table:
    """`uid`, `image`, `label` (string); rows without a label are dropped."""
    items = read_items(dataset, labels, image_col)
    if label_col in items.column_names:
        label = items.column(label_col)
    else:
        path = Path(dataset).expanduser()
        names = pq.read_schema(path).names if path.is_file() else items.column_names
        if label_col not in names:
            raise LaionetError(f"{dataset}: no label column '{label_col}'; it has {', '.join(names)} "
                               f"(choose one with --label-col)")
        label = pq.read_table(path, columns=[label_col]).column(label_col)
    label = label.cast(pa.string()) if label.type != pa.string() else label
    table = pa.table({"uid": items.column("uid"), "image": items.column("image"), "label": label})
    table = table.filter(pc.is_valid(table.column("label")))
    # A row may sit in several classes (search-dataset --multi-label keep), but once per class and
    # always with the same image.
    if _distinct(table, ["uid", "label"]) != table.num_rows:
        raise LaionetError(f"{dataset}: a uid appears twice with the same '{label_col}'")
    if _distinct(table, ["uid", "image"]) != pc.count_distinct(table.column("uid")).as_py():
        raise LaionetError(f"{dataset}: a uid appears with two different images")
    return table


def _distinct(table: pa.Table, columns: list[str]) -> int:
    return table.select(columns).group_by(columns).aggregate([]).num_rows


def similarity_dataset(dataset: str, out: str | Path, options: SimilarityOptions) -> dict:
    """Write OUT/pairs.parquet and OUT/classes.parquet; return a summary for the manifest.

    Classes are processed in groups of `classes_per_shard`, each group written to a work folder beside
    OUT (`laionet.io.shards.ShardStore`) when complete: a rerun after an interruption skips the finished
    groups, and the outputs are assembled, in class order, when all are done.
    """
    from laionet.io.shards import open_store_beside
    from laionet.progress import Progress

    started = time.perf_counter()
    out = Path(out)
    if options.per_class < 2:
        raise LaionetError("--per-class must be at least 2 (pairs need two images)")
    if options.batch_size < 1 or options.classes_per_shard < 1:
        raise LaionetError("--batch-size and the classes per shard must be at least 1")
    if bool(options.encoder) == bool(options.embeddings):
        raise LaionetError("give either --encoder (embed the images) or --embeddings (a `laionet embed` folder)")
    if options.encoder:
        check_image_embedder(options.encoder, options.checkpoint, options.precision)
    items = read_labelled_items(dataset, options.label_col, options.labels, options.image_col)

    by_label: dict[str, list[int]] = {}
    for uid, label in zip(items.column("uid").to_pylist(), items.column("label").to_pylist()):
        by_label.setdefault(label, []).append(uid)
    image_of = dict(zip(items.column("uid").to_pylist(), items.column("image").to_pylist()))
    samples = {label: sample_class(np.array(uids), label, options.per_class, options.seed)
               for label, uids in sorted(by_label.items())}
    total = sum(len(s) for s in samples.values())
    labels = list(samples)
    shards = {f"classes-{k // options.classes_per_shard:06d}": labels[k:k + options.classes_per_shard]
              for k in range(0, len(labels), options.classes_per_shard)}

    store = open_store_beside(out, [PAIRS, CLASSES], _fingerprint(dataset, items, options), options.overwrite)
    todo = [name for name in shards if not store.is_done(name)]
    done_images = total - sum(len(samples[label]) for name in todo for label in shards[name])

    source = None
    if todo:
        source = (_EmbeddingLookup(options.embeddings, np.concatenate(list(samples.values())))
                  if options.embeddings else
                  load_image_embedder(options.encoder, options.device, options.checkpoint, options.precision))
    bar = Progress("similarity", total, initial=done_images, enabled=options.progress, unit="images")
    try:
        for name in todo:
            status: Counter = Counter()
            errors: list[str] = []
            pairs, class_rows = [], []
            for label in shards[name]:
                uids = samples[label]
                items_of_class = [(int(u), image_of[int(u)]) for u in uids]
                if options.embeddings:
                    embedded = source.class_embeddings(items_of_class, status, bar)
                else:
                    embedded = embed_class(label, items_of_class, source, options, status, errors, bar)
                table, row = class_similarities(label, uids, embedded)
                pairs.append(table)
                class_rows.append(row)
            store.write(name, {PAIRS: pa.concat_tables(pairs) if pairs else PAIRS_SCHEMA.empty_table(),
                               CLASSES: pa.Table.from_pylist(class_rows, schema=CLASSES_SCHEMA)},
                        {"failures": dict(status), "errors": errors})
    finally:
        bar.close()

    out.mkdir(parents=True, exist_ok=True)
    names = list(shards)
    store.concatenate(PAIRS, names, out / PAIRS, PAIRS_SCHEMA)
    store.concatenate(CLASSES, names, out / CLASSES, CLASSES_SCHEMA)
    failures: Counter = Counter()
    errors: list[str] = []
    for name in names:
        stats = store.stats(name)
        failures.update(stats["failures"])
        errors += stats["errors"]
    store.reset()

    class_rows = pq.read_table(out / CLASSES).to_pylist()
    means = [row["mean_similarity"] for row in class_rows if row["mean_similarity"] is not None]
    failed = sum(row["failed"] for row in class_rows)
    return {"dataset": dataset, "rows_in": items.num_rows, "classes": len(class_rows),
            "classes_with_pairs": len(means), "images_sampled": total, "images_embedded": total - failed,
            "images_failed": failed, "failures": dict(failures), "errors_sample": errors[:20],
            "pairs": int(sum(row["pairs"] for row in class_rows)),
            "mean_of_class_means": float(np.mean(means)) if means else None,
            "encoder": options.encoder or _embeddings_encoder(options.embeddings),
            "embeddings": options.embeddings, "device": getattr(source, "device", None),
            "shards": len(names), "shards_resumed": len(names) - len(todo),
            "seconds": time.perf_counter() - started}


def class_similarities(label: str, uids: np.ndarray, embedded: dict[int, np.ndarray]) -> tuple[pa.Table, dict]:
    """The pairs table and the classes row of one class from its embedded images."""
    kept = np.array(sorted(embedded), dtype=np.int64)
    if len(kept) >= 2:
        matrix = l2_normalise(np.stack([embedded[u] for u in kept]))
        i, j, values = lower_triangle(matrix)
        table = pa.table({"label": pa.array([label] * len(values), pa.string()), "i_uid": kept[i],
                          "j_uid": kept[j], "similarity": values}, schema=PAIRS_SCHEMA)
    else:
        values = np.zeros(0, dtype=np.float32)
        table = PAIRS_SCHEMA.empty_table()
    return table, {"label": label, "sampled": len(uids), "failed": len(uids) - len(kept), "n": len(kept),
                   **summarise(values)}


class _EmbeddingLookup:
    """Precomputed image embeddings (`laionet embed` folder) of the sampled uids; missing uids fail."""

    device = None

    def __init__(self, path: str, wanted: np.ndarray):
        from laionet.embed.store import open_embeddings

        embeddings = open_embeddings(path)
        wanted = np.unique(np.asarray(wanted, dtype=np.int64))
        self.vectors: dict[int, np.ndarray] = {}
        for uids, vectors in embeddings.iter_parts():  # part by part: only the sample is kept in memory
            hit = np.isin(uids, wanted)
            self.vectors.update(zip(uids[hit].tolist(), vectors[hit]))

    def class_embeddings(self, items: list[tuple[int, str]], status: Counter, bar=None) -> dict[int, np.ndarray]:
        found = {uid: self.vectors[uid] for uid, _ in items if uid in self.vectors}
        if len(found) < len(items):
            status["missing_embedding"] += len(items) - len(found)
        if bar is not None:
            bar.update(len(items))
        return found


def _embeddings_encoder(path: str | None) -> str | None:
    if not path:
        return None
    from laionet.embed.store import open_embeddings

    return open_embeddings(path).encoder


def _fingerprint(dataset: str, items: pa.Table, options: SimilarityOptions) -> dict:
    """What the finished shards depend on: a rerun with anything else is refused rather than mixed in."""
    from laionet.predict.run import _file_id, fetch_fingerprint

    digest = hashlib.sha256()
    for column in ("uid", "image", "label"):
        digest.update("\n".join(map(str, items.column(column).to_pylist())).encode("utf-8", "surrogatepass"))
    embeddings = None
    if options.embeddings:
        parts = sorted(Path(options.embeddings).expanduser().glob("part-*.parquet")) or [Path(options.embeddings)]
        embeddings = [_file_id(str(p)) for p in parts]
    return {"dataset": dataset, "rows": items.num_rows, "items": digest.hexdigest(), "encoder": options.encoder,
            "checkpoint": _file_id(options.checkpoint), "embeddings": embeddings, "per_class": options.per_class,
            "seed": options.seed, "precision": options.precision, "classes_per_shard": options.classes_per_shard,
            "fetch": fetch_fingerprint(options.fetch)}


def embed_class(label: str, items: list[tuple[int, str]], encoder, options: SimilarityOptions, status: Counter,
                errors: list[str], bar=None) -> dict[int, np.ndarray]:
    """uid -> embedding of the images of one class that could be read, transformed and embedded; the
    others are counted in `status` by reason, with their first errors in `errors`."""
    from laionet.predict.batches import encoded_batches

    outcome: dict[int, tuple[str, str | None]] = {}
    embedded: dict[int, np.ndarray] = {}
    results = _iter_images(items, options.fetch)
    for ids, rows in encoded_batches(results, encoder.transform, encoder.encode, options.batch_size, outcome, bar):
        embedded.update(zip(ids, rows))
    for uid, (code, error) in outcome.items():
        if code != "ok":
            status[code] += 1
            if error and len(errors) < 20:
                errors.append(f"{label} {uid}: {error}")
    return embedded
