"""Build the vocabulary table: one row per class with its lemmas, match lemmas and query texts."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from laionet.errors import LaionetError
from laionet.io.atomic import atomic_path
from laionet.match.normalize import lemma_keys
from laionet.presets import Preset, get_preset
from laionet.vocab import tables
from laionet.vocab.sources import load_source
from laionet.vocab.templates import QUERY_TEMPLATES, render

METADATA_KEY = b"laionet.vocab"
REQUIRED_COLUMNS = ("wnid", "name", "definition", "match_lemmas")


def unique_match_lemmas(classes: list[tuple[str, list[str]]], preset: Preset) -> list[list[str]]:
    """The lemmas each class may be matched by (spec §1.2, ILSVRC scope).

    A lemma is kept only if its identity (the exact string under `paper`, the normalised form under
    `clean`) belongs to exactly one class of the vocabulary. Lemmas whose normalised form is empty are
    dropped. Within a class, the first lemma of each identity is kept, in order.
    """
    all_lemmas = [lemma for _, lemmas in classes for lemma in lemmas]
    keys = iter(lemma_keys(all_lemmas, preset))
    keyed = [[(lemma, next(keys)) for lemma in lemmas] for _, lemmas in classes]
    if preset.normalize_lemmas:
        # a class that lists two lemmas with the same normalised form still owns it alone
        owners = Counter(key for pairs in keyed for key in {k for _, k in pairs})
    else:
        owners = Counter(key for pairs in keyed for _, key in pairs)  # spec: token count, exact string
    result = []
    for pairs in keyed:
        kept, seen = [], set()
        for lemma, key in pairs:
            if key and owners[key] == 1 and key not in seen:
                kept.append(lemma)
                seen.add(key)
        result.append(kept)
    return result


def build_vocab(source: str = "imagenet-1k", preset: Preset | str = "paper") -> pa.Table:
    preset = get_preset(preset) if isinstance(preset, str) else preset
    classes = load_source(source)
    if preset.harmonize_wnids:
        classes = _harmonize(classes)
    match_lemmas = unique_match_lemmas(classes, preset)
    columns: dict[str, list] = {"wnid": [], "definition": [], "synset_lemmas": [], "match_lemmas": []}
    columns.update({template: [] for template in QUERY_TEMPLATES})
    for (wnid, lemmas), kept in zip(classes, match_lemmas):
        name, definition = tables.head_name(wnid), tables.definition(wnid)
        columns["wnid"].append(wnid)
        columns["definition"].append(definition)
        columns["synset_lemmas"].append(lemmas)
        columns["match_lemmas"].append(kept)
        for template in QUERY_TEMPLATES:
            columns[template].append(render(template, name, definition, lemmas))
    order = ["wnid", "name", "definition", "lemmas", "synset_lemmas", "match_lemmas"]
    order += [t for t in QUERY_TEMPLATES if t not in order]
    table = pa.table({key: columns[key] for key in order})
    from laionet.match.matcher import lemma_table, reachable_classes

    meta = {"source": source, "preset": preset.name, "classes": table.num_rows,
            "match_lemmas": sum(len(m) for m in match_lemmas),
            "matchable_classes": sum(1 for m in match_lemmas if m),
            "reachable_classes": len(reachable_classes(lemma_table(table), preset))}
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})


def _harmonize(classes: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    """Replace aliased wnids (the original file's n02112837) by the real ILSVRC synset."""
    present = {wnid for wnid, _ in classes}
    out = []
    for wnid, lemmas in classes:
        real = tables.resolve(wnid)
        if real != wnid and real in present:
            continue  # the real synset is listed too: keep that one only
        out.append((real, lemmas))
    return out


def vocab_info(table: pa.Table) -> dict:
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    return json.loads(raw) if raw else {}


def write_vocab(table: pa.Table, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_vocab(path: str | Path) -> pa.Table:
    path = Path(path)
    if not path.is_file():
        raise LaionetError(f"{path}: vocabulary file not found (make one with `laionet vocab`)")
    try:
        table = pq.ParquetFile(path).read()  # not read_table: it imports pyarrow.dataset (and pandas)
    except (pa.ArrowException, OSError) as exc:
        raise LaionetError(f"{path}: not a readable parquet file ({exc})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise LaionetError(f"{path}: not a vocabulary table, missing column(s) {', '.join(missing)}")
    return table
