"""Arrow arrays from numpy and Python values, built from buffers.

`pa.array` first looks for pandas and numpy.ma among its input's types, importing both: 0.3 s in each
forked match worker (where pandas is blocked, numpy.ma still costs 15 ms). These helpers only wrap or
lay out buffers, for the hot paths of `laionet match`.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa


def int64_array(values: np.ndarray) -> pa.Array:
    """An int64 array sharing the memory of `values` (copied only if not contiguous int64)."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def string_array(values: list[str]) -> pa.Array:
    """A string array of Python strings (no nulls)."""
    encoded = [value.encode("utf-8") for value in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return pa.Array.from_buffers(pa.string(), len(encoded), [None, pa.py_buffer(offsets),
                                                             pa.py_buffer(b"".join(encoded))])


def numbers(array: pa.Array | pa.ChunkedArray, dtype=np.int64) -> np.ndarray:
    """A null-free numeric Arrow array as numpy, read from its buffer (no copy for a single chunk)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if len(array) == 0:
        return np.empty(0, dtype=dtype)
    return np.frombuffer(array.buffers()[1], dtype=dtype)[array.offset:array.offset + len(array)]


def large_string_scalar(value: str) -> pa.Scalar:
    """A large_string scalar, for compute kernels (`pa.scalar` converts through the same lookups)."""
    return string_array([value]).cast(pa.large_string())[0]
