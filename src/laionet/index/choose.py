"""Which faiss index to build for a collection of n unit vectors of dimension d within a memory budget.

The autofaiss idea, our own rules (all indexes use inner product, i.e. cosine on unit vectors):

1. **Exact** (`Flat`, an IndexFlatIP) when the float32 vectors fit the budget and n ≤ FLAT_MAX_ROWS.
   A flat scan costs n·d multiply-adds per query: at 500k × 512 that is already ~0.25 GFLOP, a few ms
   per query on a few cores, while an IVF index probing ~1-3 % of the lists answers 10-50× faster at
   recall ≥ 0.95 (benchmarks/bench_index.py). Below the threshold exactness is worth its price and
   there is nothing to train.
2. Otherwise a **compressed IVF** index, `IVF{nlist},PQ{m}[,RFlat]`:
   - nlist ≈ 2·√n rounded to a power of two (16 … 65,536), and never more than train_size / 39 (faiss's
     k-means wants ≥ 39 points per centroid). The usual advice is 4-16·√n; we halve it because k-means
     costs sample × nlist × d per iteration and the sample grows with nlist: at 1M × 512, nlist 1,024
     trains in about a tenth of the time of 4,096, and probing the same share of the lists gives the same
     recall (benchmarks/bench_index.py);
   - with a flat refine (IndexRefineFlat: the PQ finds k·k_factor candidates, the exact vectors rerank
     them) when codes + ids + centroids + the float32 vectors fit: near-exact top-1 at IVF speed; the PQ
     code is then the largest that fits up to d/8 bytes (the refine fixes the order, short codes scan fast);
   - else without it, m chosen as the largest PQ code size (bytes per vector, a divisor of d, at most
     d/4) whose codes + ids + centroids + codebooks fit.
   OPQ (a learnt rotation before PQ) is available through `--factory "OPQ64,IVF4096,PQ64"`.
3. A budget too small for the smallest PQ code is an error naming the minimum.

`kind` forces a family (flat, ivf-flat, ivf-pq, hnsw) with the same sizing rules; `factory` is used as
given (expected memory then unknown). The plan records the factory string, the expected memory and the
reason for the choice, which `laionet index` writes into the manifest.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

from laionet.errors import LaionetError

KINDS = ("auto", "flat", "ivf-flat", "ivf-pq", "hnsw")
FLAT_MAX_ROWS = 500_000
MIN_NLIST, MAX_NLIST = 16, 65_536
NLIST_PER_SQRT_N = 2
POINTS_PER_CENTROID = 39  # faiss k-means warns below this
TRAIN_POINTS_PER_CENTROID = 40  # default training sample: 40 points per IVF list ...
MAX_TRAIN_SIZE = 500_000  # ... capped: k-means cost grows with sample × nlist × d
MIN_TRAIN_SIZE = 20_000  # PQ codebooks (256 centroids per sub-vector) want ≥ 10k points
UID_BYTES = 8  # uids.npy, held in memory by search
ID_BYTES = 8  # faiss stores an int64 id per vector in IVF lists
HNSW_M = 32
DEFAULT_K_FACTOR = 64
MIN_NPROBE = 32
UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
         "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


@dataclass(frozen=True)
class IndexPlan:
    factory: str
    kind: str
    nlist: int | None
    pq_bytes: int | None
    refine: bool
    expected_bytes: int | None
    reason: str
    train_size: int  # 0: nothing to train
    nprobe: int | None  # default for search
    k_factor: int | None  # refine: candidates per result

    def to_dict(self) -> dict:
        return asdict(self)


def parse_memory(text: str | int) -> int:
    """'4GB', '500MB', '40MiB', '1e9' or a byte count -> bytes."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).upper() if match else ""
    if not match or unit not in UNITS:
        raise LaionetError(f"bad memory size '{text}': use e.g. 4GB, 500MB or 16GiB")
    value = int(float(match.group(1)) * UNITS[unit])
    if value <= 0:
        raise LaionetError(f"memory size must be positive, got '{text}'")
    return value


def format_bytes(value: int | None) -> str:
    if value is None:
        return "unknown"
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value}B"


def nlist_for(n: int, train_size: int) -> int:
    """≈ 2·√n as a power of two, within [16, 65536] and at most train_size / 39."""
    target = 2 ** round(math.log2(max(1.0, NLIST_PER_SQRT_N * math.sqrt(n))))
    most = 2 ** int(math.log2(max(1, train_size // POINTS_PER_CENTROID)))
    return int(max(1, min(max(MIN_NLIST, min(target, MAX_NLIST)), most)))


def default_train_size(n: int) -> int:
    nlist = nlist_for(n, n)
    return int(min(n, max(MIN_TRAIN_SIZE, min(MAX_TRAIN_SIZE, TRAIN_POINTS_PER_CENTROID * nlist))))


def default_nprobe(nlist: int) -> int:
    """Lists probed by default: 1/64 of them, and at least 32. With the flat refine, 1/128 to 1/16 of the
    lists all gave recall@1 0.9965 on the 1M × 512 benchmark, where 1/64 (32 of 2,048) answers > 10× faster
    than a flat scan. Small collections are less clustered relative to their lists (MiniLM caption
    embeddings of 3,000 LAION captions in 64 lists: 8 probes found 97 % of the top-1s, 32 found all), and
    scanning half of a small index costs little."""
    return int(min(nlist, max(MIN_NPROBE, nlist // 64)))


def pq_sizes(dim: int) -> list[int]:
    """PQ code sizes (bytes per vector) that divide dim, largest first, at most dim/4 (≥ 4 dims per sub-vector
    keeps the codebooks meaningful and the scan cheap)."""
    return [m for m in range(dim // 4, 0, -1) if dim % m == 0] or [1]


def flat_bytes(n: int, dim: int) -> int:
    return n * (dim * 4 + UID_BYTES)


def ivf_flat_bytes(n: int, dim: int, nlist: int) -> int:
    return n * (dim * 4 + ID_BYTES + UID_BYTES) + nlist * dim * 4


def ivf_pq_bytes(n: int, dim: int, nlist: int, m: int, refine: bool) -> int:
    codebooks = 256 * dim * 4
    return n * (m + ID_BYTES + UID_BYTES + (dim * 4 if refine else 0)) + nlist * dim * 4 + codebooks


def hnsw_bytes(n: int, dim: int) -> int:
    return n * (dim * 4 + UID_BYTES + int(2 * HNSW_M * 4 * 1.1))


def choose_index(n: int, dim: int, max_memory: int, kind: str = "auto", factory: str | None = None,
                 train_size: int | None = None) -> IndexPlan:
    if n < 1:
        raise LaionetError("the collection has no vectors")
    if kind not in KINDS:
        raise LaionetError(f"unknown index kind '{kind}': use one of {', '.join(KINDS)}")
    train = int(min(n, train_size)) if train_size else default_train_size(n)
    if train_size is not None and train_size < 1:
        raise LaionetError("--train-size must be at least 1")
    budget = format_bytes(max_memory)
    if factory:
        nlist = _nlist_in(factory)
        trains = not factory.strip().startswith(("Flat", "HNSW"))
        return IndexPlan(factory.strip(), "factory", nlist, None, "RFlat" in factory or "Refine" in factory, None,
                         "factory string given with --factory", train if trains else 0,
                         default_nprobe(nlist) if nlist else None, DEFAULT_K_FACTOR)
    flat = flat_bytes(n, dim)
    if kind == "flat" or (kind == "auto" and flat <= max_memory and n <= FLAT_MAX_ROWS):
        why = ("exact search: the float32 vectors (" + format_bytes(flat) + f") fit the budget ({budget}) and "
               f"n = {n:,} ≤ {FLAT_MAX_ROWS:,}") if kind == "auto" else "exact search (--kind flat)"
        return IndexPlan("Flat", "flat", None, None, False, flat, why, 0, None, None)
    if kind == "hnsw":
        return IndexPlan(f"HNSW{HNSW_M},Flat", "hnsw", None, None, False, hnsw_bytes(n, dim),
                         "graph index (--kind hnsw)", 0, None, None)
    nlist = nlist_for(n, train)
    if kind == "ivf-flat":
        return IndexPlan(f"IVF{nlist},Flat", "ivf-flat", nlist, None, False, ivf_flat_bytes(n, dim, nlist),
                         f"inverted lists over exact vectors (--kind ivf-flat), nlist ≈ 2·√n = {nlist}", train,
                         default_nprobe(nlist), None)
    why_auto = (f"n = {n:,} > {FLAT_MAX_ROWS:,}" if flat <= max_memory else
                f"the float32 vectors ({format_bytes(flat)}) exceed the budget ({budget})")
    sizes = pq_sizes(dim)
    for m in [m for m in sizes if m <= max(1, dim // 8)]:  # the refine reranks: smaller codes scan faster
        need = ivf_pq_bytes(n, dim, nlist, m, refine=True)
        if need <= max_memory:
            return IndexPlan(f"IVF{nlist},PQ{m},RFlat", "ivf-pq", nlist, m, True, need,
                             f"{why_auto if kind == 'auto' else '--kind ivf-pq'}: IVF (nlist ≈ 2·√n = {nlist}) "
                             f"with PQ{m} codes and a flat refine, which fit the budget ({budget})",
                             train, default_nprobe(nlist), DEFAULT_K_FACTOR)
    for m in sizes:
        need = ivf_pq_bytes(n, dim, nlist, m, refine=False)
        if need <= max_memory:
            return IndexPlan(f"IVF{nlist},PQ{m}", "ivf-pq", nlist, m, False, need,
                             f"{why_auto if kind == 'auto' else '--kind ivf-pq'}: IVF (nlist ≈ 2·√n = {nlist}) "
                             f"with PQ{m}, the largest code that fits the budget ({budget}); no room for a "
                             f"flat refine ({format_bytes(ivf_pq_bytes(n, dim, nlist, sizes[-1], True))})",
                             train, default_nprobe(nlist), None)
    least = ivf_pq_bytes(n, dim, nlist, sizes[-1], refine=False)
    raise LaionetError(f"--max-memory {budget} is too small for {n:,} vectors of dimension {dim}: the smallest "
                       f"compressed index (IVF{nlist},PQ{sizes[-1]}) needs about {format_bytes(least)}")


def _nlist_in(factory: str) -> int | None:
    match = re.search(r"IVF(\d+)", factory)
    return int(match.group(1)) if match else None
