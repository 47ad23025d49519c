"""Turn a column of captions into one searchable byte string, without a per-row Python loop.

Every caption is padded with spaces and the padded captions are laid end to end, so a single automaton
pass over the buffer finds the matches of all rows; a match's row is found from the Arrow offsets with a
binary search. Padding keeps rows apart: a pattern is a space-padded phrase with single spaces inside,
and two adjacent rows are separated by at least two spaces, so no match can span two rows.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from laionet.io.arrays import large_string_scalar

# bytes.translate table: string.punctuation -> space. ASCII bytes never occur inside a multi-byte UTF-8
# sequence, so a byte-wise translation is exactly the original character-wise replacement (spec §1.3).
PUNCTUATION_TO_SPACE = bytes.maketrans(string.punctuation.encode(), b" " * len(string.punctuation))


@dataclass
class Haystack:
    data: memoryview  # all padded captions, end to end (a view of an Arrow buffer: no copy)
    offsets: np.ndarray  # int64, len(rows) + 1: row i is data[offsets[i]:offsets[i + 1]]

    def rows_of(self, starts: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.offsets, starts, side="right") - 1


def build_haystack(texts: pa.Array | pa.ChunkedArray, pad: str, strip_punctuation: bool) -> Haystack:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    texts = texts.cast(pa.large_string())  # int64 offsets: a batch may hold more than 2 GiB of text
    empty = large_string_scalar("")
    if texts.null_count:
        texts = pc.fill_null(texts, empty)  # a null caption matches nothing (callers count or reject them)
    if strip_punctuation:  # before padding, so that the padded Arrow buffer is scanned in place
        texts = _translated(texts, PUNCTUATION_TO_SPACE)
    pad_scalar = large_string_scalar(pad)
    padded = pc.binary_join_element_wise(pad_scalar, texts, pad_scalar, empty)
    offsets, data = _values(padded)
    return Haystack(data, offsets)


def _values(texts: pa.Array) -> tuple[np.ndarray, memoryview]:
    """A large_string array's offsets (from 0) and its bytes, both without a copy where possible."""
    _, offsets_buffer, data_buffer = texts.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[texts.offset:texts.offset + len(texts) + 1]
    start, end = int(offsets[0]), int(offsets[-1])
    data = memoryview(data_buffer).cast("B")[start:end] if data_buffer is not None else memoryview(b"")
    return (offsets - start if start else offsets), data


def _translated(texts: pa.Array, table: bytes) -> pa.Array:
    """`texts` with its bytes mapped through `table` (bytes.translate: one C loop, no per-row work)."""
    offsets, data = _values(texts)
    translated = data.tobytes().translate(table)
    return pa.Array.from_buffers(pa.large_string(), len(texts),
                                 [None, pa.py_buffer(offsets), pa.py_buffer(translated)])
