"""`laionet index`: a faiss index over an embedding folder, built part by part and resumable.

Layout of INDEX_DIR when done:

    index.faiss     the faiss index; its ids are sequential int64 positions 0..n-1
    uids.npy        int64 array: position -> uid (uids may be huge: LAION's part × 1e8 + row)
    manifest.json   stages.index = the plan (factory string, expected memory, reason), the embeddings and
                    their encoder, the default nprobe, counts

The index is trained once on a seeded sample (EmbeddingSet.sample) and saved; then the parts are added one
by one. After a part, now and then, the index and the uid array are saved under names carrying the part number
and then `progress.json` is replaced to point at them: a killed build resumes from the last saved part and
never adds a part twice (a checkpoint written without its progress record is simply ignored). The index
is saved at most every `checkpoint_seconds` (see CheckpointPace), since each save rewrites all of it. The work
folder remembers the inputs and parameters (ShardStore's fingerprint): a rerun with others is refused.
`--runner ray` builds sub-indexes in Ray tasks and merges them in part order (laionet.index.ray_build).
"""

from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from laionet.embed.store import EmbeddingSet, open_embeddings
from laionet.errors import LaionetError
from laionet.index.choose import IndexPlan, choose_index, format_bytes, parse_memory
from laionet.io.atomic import atomic_path, write_text_atomic
from laionet.io.shards import ShardStore

INDEX_FILE = "index.faiss"
UIDS_FILE = "uids.npy"
MANIFEST = "manifest.json"
WORK = ".work"
TRAINED = "trained.faiss"
PROGRESS = "progress.json"
NORM_TOLERANCE = 1e-3
RUNNERS = ("local", "ray")
PQ_POINTS_PER_CODEWORD = 64
PQ_ITERATIONS = 15
IVF_ITERATIONS = 10


@dataclass(frozen=True)
class IndexOptions:
    max_memory: str | int = "4GB"
    kind: str = "auto"
    factory: str | None = None
    train_size: int | None = None
    nprobe: int | None = None  # default nprobe recorded for search (None: the plan's)
    seed: int = 0
    overwrite: bool = False
    progress: bool = True
    runner: str = "local"
    ray_address: str | None = None
    parts_per_task: int = 1  # ray: parts per sub-index task
    checkpoint_seconds: float = 60.0  # save the growing index at most this often (0: after every part)


def faiss_module():
    try:
        import faiss
    except ImportError:
        raise LaionetError("laionet index/search need faiss: pip install 'laionet[index]'") from None
    return faiss


def unit_rows(vectors: np.ndarray) -> tuple[np.ndarray, int]:
    """The rows scaled to unit norm where they are not (zero rows stay zero); and how many were changed."""
    norms = np.linalg.norm(vectors, axis=1)
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    off &= norms > 0
    if not off.any():
        return vectors, 0
    vectors = vectors.copy()
    vectors[off] /= norms[off, None]
    return vectors, int(off.sum())


def write_faiss(index, path: Path) -> None:
    faiss = faiss_module()
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def write_npy(array: np.ndarray, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def read_npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def fingerprint_of(embeddings: EmbeddingSet, options: IndexOptions, plan: IndexPlan) -> dict:
    parts = [{"name": p.name, "rows": rows, "size": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
             for p, rows in zip(embeddings.parts, embeddings.part_rows)]
    return {"embeddings": str(embeddings.path.resolve()), "parts": parts, "dim": embeddings.dim,
            "factory": plan.factory, "train_size": plan.train_size, "seed": options.seed}


def new_index(plan: IndexPlan, dim: int, seed: int):
    faiss = faiss_module()
    try:
        index = faiss.index_factory(dim, plan.factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise LaionetError(f"bad faiss factory string '{plan.factory}': {str(exc).splitlines()[-1]}") from None
    _configure_training(index, seed)
    return index


def _configure_training(index, seed: int) -> None:
    """Seed k-means (IVF lists, PQ codebooks) so a build is reproducible; drop the small-sample warnings
    (the plan already keeps ≥ 39 points per list); skip polysemous training, which the factory turns on for
    IVF-PQ and which costs minutes while only serving Hamming filtering, which we do not use."""
    faiss = faiss_module()
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return
    ivf = faiss.downcast_index(ivf)
    ivf.cp.seed = seed
    ivf.cp.min_points_per_centroid = 1
    ivf.cp.niter = IVF_ITERATIONS  # 10 rather than 25: the lists barely move after that
    pq = getattr(ivf, "pq", None)
    if hasattr(ivf, "do_polysemous_training"):
        ivf.do_polysemous_training = False
    if pq is not None:
        pq.cp.seed = seed
        pq.cp.min_points_per_centroid = 1
        # 64 points per codeword and 15 iterations: codebooks as good for our recall (the refine or nprobe
        # dominate) at a fraction of the default (256 points, 25 iterations) training time
        pq.cp.max_points_per_centroid = PQ_POINTS_PER_CODEWORD
        pq.cp.niter = PQ_ITERATIONS


def train_index(embeddings: EmbeddingSet, plan: IndexPlan, seed: int):
    index = new_index(plan, embeddings.dim, seed)
    if not index.is_trained:
        sample, _ = unit_rows(embeddings.sample(plan.train_size, seed=seed))
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def build_index(embeddings_path: str | Path, out: str | Path, options: IndexOptions = IndexOptions()) -> dict:
    """Build OUT/index.faiss, OUT/uids.npy and OUT/manifest.json; return the manifest's stage info."""
    from laionet.io.manifest import new_manifest, read_manifest, write_manifest

    started = time.perf_counter()
    out = Path(out)
    if options.runner not in RUNNERS:
        raise LaionetError(f"unknown runner '{options.runner}': use local or ray")
    embeddings = open_embeddings(embeddings_path)
    budget = parse_memory(options.max_memory)
    plan = choose_index(embeddings.rows, embeddings.dim, budget, options.kind, options.factory, options.train_size)
    if options.nprobe is not None:
        if options.nprobe < 1:
            raise LaionetError("--nprobe must be at least 1")
        plan = IndexPlan(**{**plan.to_dict(), "nprobe": options.nprobe})
    fingerprint = fingerprint_of(embeddings, options, plan)
    finished = read_manifest(out / MANIFEST)
    if options.overwrite:
        for name in (INDEX_FILE, UIDS_FILE, MANIFEST):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / WORK, ignore_errors=True)
    elif finished and (out / INDEX_FILE).exists():
        if finished.get("stages", {}).get("index", {}).get("fingerprint") == json.loads(json.dumps(fingerprint)):
            return dict(finished["stages"]["index"], already_built=True)
        raise LaionetError(f"{out}: holds an index built from other inputs or parameters; "
                           f"choose another folder, or rerun with --overwrite")
    store = ShardStore(out / WORK, [], fingerprint)
    store.open()

    trained_path = store.workdir / TRAINED
    if trained_path.exists():
        trained = faiss_module().read_index(str(trained_path))
    else:
        trained = train_index(embeddings, plan, options.seed)
        write_faiss(trained, trained_path)
    train_seconds = time.perf_counter() - started

    if options.runner == "ray":
        from laionet.index.ray_build import add_parts_ray

        index, uids, normalised = add_parts_ray(embeddings, trained, store.workdir, options)
    else:
        index, uids, normalised = add_parts_local(embeddings, trained, store.workdir, options.progress,
                                                  options.checkpoint_seconds)

    write_faiss(index, out / INDEX_FILE)
    write_npy(uids, out / UIDS_FILE)
    info = {"embeddings": str(embeddings.path), "encoder": embeddings.encoder, "dim": embeddings.dim,
            "rows": int(index.ntotal), "parts": len(embeddings.parts), **plan.to_dict(),
            "max_memory": budget, "max_memory_text": format_bytes(budget), "metric": "inner_product",
            "normalised_rows": normalised, "runner": options.runner, "seed": options.seed,
            "index_file_bytes": (out / INDEX_FILE).stat().st_size, "fingerprint": fingerprint,
            "train_seconds": round(train_seconds, 3), "seconds": round(time.perf_counter() - started, 3)}
    manifest = new_manifest("index", {"embeddings": str(embeddings_path), **{
        k: v for k, v in options.__dict__.items() if k not in ("progress", "overwrite")}})
    manifest["stages"]["index"] = info
    write_manifest(out / MANIFEST, manifest)
    store.reset()
    return info


def add_parts_local(embeddings: EmbeddingSet, trained, workdir: Path, progress: bool = True,
                    checkpoint_seconds: float = 0.0):
    """Add the parts one by one to the trained index, checkpointing as `CheckpointPace` says and after the
    last part; returns (index, uids, normalised)."""
    faiss = faiss_module()
    from laionet.progress import Progress

    state = read_progress(workdir)
    if state:
        index = faiss.read_index(str(workdir / state["index"]))
        uids = [read_npy(workdir / state["uids"])]
    else:
        index, uids = faiss.clone_index(trained), []
    done = state.get("parts_done", 0)
    normalised = state.get("normalised_rows", 0)
    bar = Progress("index", embeddings.rows, initial=sum(embeddings.part_rows[:done]), enabled=progress,
                   unit="vectors")
    pace = CheckpointPace(checkpoint_seconds)
    last = len(embeddings.parts) - 1
    try:
        for part in range(done, len(embeddings.parts)):
            part_uids, changed = add_part(index, embeddings, part)
            normalised += changed
            uids.append(part_uids)
            if part == last or pace.due():
                uids = [np.concatenate(uids)]
                with pace.saving():
                    save_checkpoint(workdir, index, uids[0], part + 1, normalised)
            bar.update(len(part_uids))
    finally:
        bar.close()
    all_uids = np.concatenate(uids) if uids else np.zeros(0, dtype=np.int64)
    return index, all_uids.astype(np.int64, copy=False), normalised


def add_part(index, embeddings: EmbeddingSet, part: int) -> tuple[np.ndarray, int]:
    """Add one part's vectors (made unit-norm) to `index`; returns its uids and how many rows were normalised."""
    part_uids, vectors = embeddings.read_part(part)
    vectors, changed = unit_rows(vectors)
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return part_uids, changed


class CheckpointPace:
    """When to save the growing index. Saving rewrites the whole index, so saving after every part would
    cost time quadratic in the parts; instead save when `interval` seconds have passed since the last save
    and at least four times as long as that save took (saving then costs at most ~20% of the build). A
    killed build loses at most that much work."""

    def __init__(self, interval: float):
        self.interval = interval
        self.last_save_end = time.perf_counter()
        self.last_save_seconds = 0.0

    def due(self) -> bool:
        waited = time.perf_counter() - self.last_save_end
        return self.interval <= 0 or waited >= max(self.interval, 4 * self.last_save_seconds)

    @contextmanager
    def saving(self):
        started = time.perf_counter()
        yield
        self.last_save_end = time.perf_counter()
        self.last_save_seconds = self.last_save_end - started


def read_progress(workdir: Path) -> dict:
    path = workdir / PROGRESS
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def save_checkpoint(workdir: Path, index, uids: np.ndarray, parts_done: int, normalised: int) -> None:
    """Index and uids under part-numbered names, then the progress record that points at them (the commit
    point), then the previous checkpoint's files are removed."""
    previous = read_progress(workdir)
    index_name, uids_name = f"index-{parts_done:05d}.faiss", f"uids-{parts_done:05d}.npy"
    write_faiss(index, workdir / index_name)
    write_npy(uids, workdir / uids_name)
    write_text_atomic(workdir / PROGRESS, json.dumps({"parts_done": parts_done, "rows": int(index.ntotal),
                                                      "index": index_name, "uids": uids_name,
                                                      "normalised_rows": normalised}))
    for key in ("index", "uids"):
        if previous.get(key) and previous[key] not in (index_name, uids_name):
            (workdir / previous[key]).unlink(missing_ok=True)
