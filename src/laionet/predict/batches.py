"""Fetched images through a model in batches, with every row's outcome kept: shared by embed, zeroshot and
similarity (predict runs several models at once and batches per model itself)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from laionet.predict.run import _one_line

Outcome = tuple[str, "str | None"]  # (status, error): the fetch's, or transform_error / model_error


def encoded_batches(results: Iterable, transform: Callable, encode: Callable, batch_size: int,
                    status: dict[int, Outcome], bar=None) -> Iterator[tuple[tuple[int, ...], Any]]:
    """Yield (uids, encode(stacked tensors)) for the images of `results` (objects with uid, status, error,
    image) that fetched and transformed, `batch_size` at a time. Each result's outcome goes into
    `status[uid]`: a bad image fails with transform_error and a batch that raises (say, out of memory)
    fails its rows with model_error; neither ends the run."""
    import torch

    batch: list[tuple[int, Any]] = []

    def run_batch():
        ids, tensors = zip(*batch)
        batch.clear()
        try:
            return ids, encode(torch.stack(tensors))
        except Exception as exc:  # noqa: BLE001 - recorded per row
            status.update((uid, ("model_error", _one_line(exc))) for uid in ids)
            return None

    for result in results:
        status[result.uid] = (result.status, result.error)
        if result.status == "ok":
            try:
                batch.append((result.uid, transform(result.image)))
            except Exception as exc:  # noqa: BLE001 - one unusual image must not end the run
                status[result.uid] = ("transform_error", _one_line(exc))
            if len(batch) >= batch_size and (done := run_batch()) is not None:
                yield done
        if bar is not None:
            bar.update(1)
    if batch and (done := run_batch()) is not None:
        yield done
