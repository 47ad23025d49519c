"""The match stage: a shard of captions -> its matches, and the single-label candidate rows.

Outputs per shard:
- `matches`: the long table `uid, wnid, lemma`, one row per (caption, matched lemma).
- `candidates` (optional): the input rows whose matches name exactly one class, with all input columns,
  `uid`, `wnid` and `matched_lemmas`. Rows matching several classes are the multi-label drops of the
  original (spec §3.3 step 3); the same class matched through several lemmas is still single-label.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from laionet.io.arrays import numbers
from laionet.io.inputs import InputPlan, Shard, null_text_error
from laionet.match.matcher import MATCHES_SCHEMA, Matcher, lemma_table, sorted_unique
from laionet.presets import Preset

CANDIDATE_FIELDS = [pa.field("wnid", pa.string()), pa.field("matched_lemmas", pa.list_(pa.string()))]
# Columns that later stages add; an input column of the same name is renamed on the way in. LAION parts
# carry `similarity` (LAION's own CLIP image-text score), which must not be confused with ours.
ADDED_COLUMNS = ("wnid", "matched_lemmas", "query", "similarity")


def input_column_name(name: str) -> str:
    if name not in ADDED_COLUMNS:
        return name
    return "laion_similarity" if name == "similarity" else f"input_{name}"


class MatchStage:
    name = "match"
    uses_gpu = False
    max_workers = None

    def __init__(self, vocab: pa.Table, preset: Preset, plan: InputPlan, engine: str = "auto",
                 keep_candidates: bool = False):
        self.preset = preset
        self.plan = plan
        self.engine = engine
        self.lemma_to_wnid = lemma_table(vocab)
        self.outputs = ("matches", "candidates") if keep_candidates else ("matches",)
        self.columns = None if keep_candidates else [plan.text_col]
        self.matcher: Matcher | None = None

    @property
    def fork_safe(self) -> bool:
        # the paper path uses pyarrow, numpy and the automaton only; `clean` normalises with Polars,
        # whose thread pool does not survive a fork
        return not self.preset.normalize_lemmas

    def setup(self) -> None:
        if self.matcher is None:
            self.matcher = Matcher(self.lemma_to_wnid, self.preset, self.engine)

    def __getstate__(self) -> dict:
        # the automaton may not pickle: a Ray worker rebuilds it in setup()
        return dict(self.__dict__, matcher=None)

    def process(self, table: pa.Table, shard: Shard) -> tuple[dict[str, pa.Table], dict]:
        return self.process_batches([table], shard)

    def process_batches(self, batches: Iterable[pa.Table], shard: Shard) -> tuple[dict[str, pa.Table], dict]:
        """Match a shard given as consecutive slices (`io.inputs.iter_shard`): each slice is matched as
        soon as it is decoded. Returns the shard's tables and counts."""
        self.setup()
        parts: dict[str, list[pa.Table]] = {name: [] for name in self.outputs}
        counts = {"rows_in": 0, "null_text": 0, "matches": 0, "rows_matched": 0}
        if "candidates" in self.outputs:
            counts.update(multi_label=0, single_label=0)
        for table in batches:
            texts = table.column(self.plan.text_col)
            nulls = texts.null_count
            if nulls and not self.plan.skip_null_text:
                first = int(np.flatnonzero(pc.is_null(texts).to_numpy(zero_copy_only=False))[0])
                raise null_text_error(shard.path, self.plan.text_col, nulls,
                                      f"first at row {shard.row_start + counts['rows_in'] + first}")
            matches = self.matcher.match(table.column("uid"), texts)
            matched_uids = sorted_unique(numbers(matches.column("uid")))
            counts["rows_in"] += table.num_rows
            counts["null_text"] += nulls
            counts["matches"] += matches.num_rows
            counts["rows_matched"] += len(matched_uids)
            parts["matches"].append(matches)
            if "candidates" in self.outputs:
                candidates, multi = self._candidates(table, matches, matched_uids)
                parts["candidates"].append(candidates)
                counts["multi_label"] += multi
                counts["single_label"] += candidates.num_rows
        tables = {name: pa.concat_tables(tables) for name, tables in parts.items()}
        # per-class counts of the shard: a caption lives in one shard, so the shards' counts add up
        counts["class_counts"] = class_counts(tables["matches"])
        return tables, counts

    @staticmethod
    def _candidates(table: pa.Table, matches: pa.Table, matched_uids: np.ndarray) -> tuple[pa.Table, int]:
        per_row = (
            matches.group_by("uid", use_threads=False)
            .aggregate([("wnid", "count_distinct"), ("wnid", "min"), ("lemma", "list")])
        )
        single = per_row.filter(pc.equal(per_row.column("wnid_count_distinct"), 1))
        position = pc.index_in(table.column("uid"), value_set=single.column("uid"))
        keep = pc.is_valid(position)
        rows = table.filter(keep)
        rows = rows.rename_columns([input_column_name(n) for n in rows.column_names])
        picked = pc.drop_null(position)
        rows = rows.append_column("wnid", single.column("wnid_min").take(picked))
        rows = rows.append_column("matched_lemmas", single.column("lemma_list").take(picked))
        return rows.cast(_candidate_schema(table.schema)), len(matched_uids) - single.num_rows

    def output_schema(self, output: str, input_schema: pa.Schema) -> pa.Schema:
        return MATCHES_SCHEMA if output == "matches" else _candidate_schema(input_schema)


def class_counts(matches: pa.Table) -> dict[str, int]:
    """wnid -> distinct captions (uids) matching it, sorted by wnid.

    Numpy over the Arrow buffers rather than Polars or Arrow's group_by: a `laionet match` process loads
    neither Polars (0.1 s) nor pandas (0.3 s, which pyarrow's conversions and group_by import)."""
    if matches.num_rows == 0:
        return {}
    uids = numbers(matches.column("uid"))
    wnids = matches.column("wnid").combine_chunks().dictionary_encode()
    codes = numbers(wnids.indices, np.int32)
    order = np.lexsort((codes, uids))
    uids, codes = uids[order], codes[order]
    first = np.ones(len(uids), dtype=bool)  # first row of each distinct (uid, wnid)
    first[1:] = (uids[1:] != uids[:-1]) | (codes[1:] != codes[:-1])
    counts = np.bincount(codes[first], minlength=len(wnids.dictionary))
    names = wnids.dictionary.to_pylist()
    return {names[i]: int(counts[i]) for i in sorted(range(len(names)), key=names.__getitem__) if counts[i]}


def _candidate_schema(input_schema: pa.Schema) -> pa.Schema:
    fields = [f.with_name(input_column_name(f.name)) for f in input_schema]
    return pa.schema(fields + CANDIDATE_FIELDS)
