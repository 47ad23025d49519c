"""`laionet index --runner ray`: after training, Ray tasks each add a group of parts to a copy of the
trained empty index and write it to the work folder; the sub-indexes are then merged in part order.

A sub-index's ids start at 0; merging shifts them by the vectors already merged, so the ids (positions)
and the inverted lists come out as the local build's. Sub-indexes already on disk (a resumed run) are not
rebuilt. Mergeable: Flat, IVF (with or without OPQ) and IVF + flat refine; HNSW is not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from laionet.embed.store import EmbeddingSet
from laionet.errors import LaionetError


def _group_name(first: int, last: int) -> str:
    return f"sub-{first:05d}-{last:05d}"


def build_sub_index(trained_bytes, embeddings_path: str, parts: list[int], workdir: str, name: str) -> int:
    """Add `parts` to a copy of the trained index and save it (and its uids) as `name`; returns the rows."""
    import faiss

    from laionet.embed.store import open_embeddings
    from laionet.index.build import add_part, write_faiss, write_npy

    index = faiss.deserialize_index(np.asarray(trained_bytes))
    embeddings = open_embeddings(embeddings_path)
    uids, normalised = [], 0
    for part in parts:
        part_uids, changed = add_part(index, embeddings, part)
        normalised += changed
        uids.append(part_uids)
    folder = Path(workdir)
    write_npy(np.array([normalised], dtype=np.int64), folder / f"{name}.normalised.npy")
    write_npy(np.concatenate(uids).astype(np.int64), folder / f"{name}.uids.npy")
    write_faiss(index, folder / f"{name}.faiss")  # last: its presence marks the group done
    return int(index.ntotal)


def merge_into(target, other) -> None:
    """Append `other`'s vectors to `target`, its ids shifted to follow target's."""
    import faiss

    offset = target.ntotal
    if isinstance(target, faiss.IndexRefine):
        merge_into(faiss.downcast_index(target.base_index), faiss.downcast_index(other.base_index))
        merge_into(faiss.downcast_index(target.refine_index), faiss.downcast_index(other.refine_index))
        target.ntotal += other.ntotal
    elif isinstance(target, faiss.IndexFlatCodes):
        target.merge_from(other, 0)  # flat ids are positions already
    elif isinstance(target, (faiss.IndexIVF, faiss.IndexPreTransform)):
        target.merge_from(other, offset)
    else:
        raise LaionetError(f"--runner ray cannot merge a {type(target).__name__} index; use --runner local")


def add_parts_ray(embeddings: EmbeddingSet, trained, workdir: Path, options):
    """(index, uids, normalised) as add_parts_local gives, with the adding done in Ray tasks."""
    import faiss

    try:
        import ray
    except ImportError:
        raise LaionetError("the ray runner needs Ray: pip install 'laionet[ray]'") from None
    from laionet.progress import Progress
    from laionet.runners.ray_runner import init_ray

    if faiss.downcast_index(trained).__class__.__name__.startswith("IndexHNSW"):
        raise LaionetError("--runner ray cannot merge HNSW indexes; use --runner local")
    step = max(1, int(options.parts_per_task))
    groups = [list(range(i, min(i + step, len(embeddings.parts)))) for i in range(0, len(embeddings.parts), step)]
    names = [_group_name(g[0], g[-1]) for g in groups]
    todo = [(g, n) for g, n in zip(groups, names) if not (workdir / f"{n}.faiss").exists()]

    started_here = init_ray(ray, options.ray_address)
    bar = Progress("index", len(groups), initial=len(groups) - len(todo), enabled=options.progress, unit="tasks")
    try:
        if todo:
            trained_ref = ray.put(faiss.serialize_index(trained))
            task = ray.remote(num_cpus=1)(build_sub_index)
            pending = [task.remote(trained_ref, str(embeddings.path.resolve()), g, str(workdir), n) for g, n in todo]
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                ray.get(ready)
                bar.update(len(ready))
    finally:
        bar.close()
        if started_here:
            ray.shutdown()

    from laionet.index.build import read_npy

    index = faiss.clone_index(trained)
    uids, normalised = [], 0
    for name in names:  # part order
        merge_into(index, faiss.read_index(str(workdir / f"{name}.faiss")))
        uids.append(read_npy(workdir / f"{name}.uids.npy"))
        normalised += int(read_npy(workdir / f"{name}.normalised.npy")[0])
    return index, np.concatenate(uids).astype(np.int64), normalised
