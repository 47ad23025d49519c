"""The original substring labeller, re-implemented for comparison only. Do not use it.

This is the baseline of `bench_match.py`: the per-row algorithm of the original system
(`/work/shared/reference/original-system.md` §1.2, §1.3, §2.3), written out again so its speed can be
measured on this machine. It keeps every costly choice of the original on purpose:

- the part is a pandas DataFrame, walked with `df.iterrows()` (one pandas Series built per row);
- `multiprocessing.Pool(n_process).imap(label_row, tasks)` with the default chunksize of 1, and every task
  is a tuple `(index, row, lemma2wnid)`, so the whole lemma -> wnid dict (1,825 entries) is pickled and
  sent to a worker once per caption;
- per row: every `string.punctuation` character becomes a space (`str.translate`), the caption is padded
  with one space at each end, and then *every* lemma is padded and tested with `in`, a linear scan;
- results are collected in row order into `wnid -> [index]` and `lemma -> [index]` maps; a row whose
  caption raises (e.g. None) is recorded as an error and gets no labels.

`laionet match` replaces all of this with one automaton pass over a whole batch (see
`src/laionet/match/`); the two must give the same (row, wnid, lemma) triples for the `paper` preset.
"""

from __future__ import annotations

import multiprocessing
import string
from collections import Counter
from pathlib import Path

import pandas as pd

TEXT_COL = "TEXT"
_PUNCTUATION_TO_SPACE = str.maketrans(string.punctuation, " " * len(string.punctuation))


def build_lemma2wnid(synsets_path: str | Path) -> dict[str, str]:
    """lemma -> wnid, ILSVRC uniqueness scope, empty wnids ignored (spec §1.2), in file order.

    The file is `id: lemmas` then `<wnid>: <lemma>, <lemma>, ...`; a lemma is kept only when its exact,
    case-sensitive string occurs once among all lemma tokens of all synsets.
    """
    rows = []
    for line in Path(synsets_path).read_text().splitlines()[1:]:
        if line.strip():
            wnid, lemmas = line.split(": ", 1)
            rows.append((wnid, lemmas.split(", ")))
    occurrences = Counter(lemma for _, lemmas in rows for lemma in lemmas)
    lemma2wnid: dict[str, str] = {}
    for wnid, lemmas in rows:
        for lemma in lemmas:
            if occurrences[lemma] == 1:
                assert lemma not in lemma2wnid
                lemma2wnid[lemma] = wnid
    return lemma2wnid


def transform_text(text: str) -> str:
    return " " + text.translate(_PUNCTUATION_TO_SPACE) + " "


def transform_lemma(lemma: str) -> str:
    return " " + lemma + " "


def label_row(task):
    """One task of the pool: (index, row, lemma2wnid) -> (index, lemmas, wnids, error)."""
    index, row, lemma2wnid = task
    try:
        caption = transform_text(row[TEXT_COL])
        lemmas, wnids = [], set()
        for lemma, wnid in lemma2wnid.items():
            if transform_lemma(lemma) in caption:
                lemmas.append(lemma)
                wnids.add(wnid)
        return index, lemmas, wnids, None
    except Exception as exc:  # noqa: BLE001 - the original recorded and skipped such rows
        return index, None, None, f"row {index}: {exc!r}"


def _tasks(df: pd.DataFrame, lemma2wnid: dict[str, str]):
    for index, row in df.iterrows():
        yield index, row, lemma2wnid


def label_dataframe(df: pd.DataFrame, lemma2wnid: dict[str, str], n_process: int
                    ) -> tuple[dict[str, list], dict[str, list], list[str]]:
    """The original labelling loop over one part: (wnid -> indices, lemma -> indices, errors)."""
    wnid2indices: dict[str, list] = {}
    lemma2indices: dict[str, list] = {}
    errors: list[str] = []
    with multiprocessing.Pool(n_process) as pool:
        for index, lemmas, wnids, error in pool.imap(label_row, _tasks(df, lemma2wnid)):
            if error is not None:
                errors.append(error)
                continue
            for lemma in lemmas:
                lemma2indices.setdefault(lemma, []).append(index)
            for wnid in wnids:
                wnid2indices.setdefault(wnid, []).append(index)
    return wnid2indices, lemma2indices, errors


def triples(lemma2indices: dict[str, list], lemma2wnid: dict[str, str]) -> set[tuple[int, str, str]]:
    """The (row, wnid, lemma) set of a labelling, for comparison with `laionet match` output."""
    return {(int(index), lemma2wnid[lemma], lemma) for lemma, indices in lemma2indices.items()
            for index in indices}
