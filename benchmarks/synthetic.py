"""Synthetic LAION-like captions for benchmarks.

The captions are built from the words of the real LAION sample (`TEXT` split on whitespace): the number of
words of each caption is drawn from the real captions' word-count distribution, and each word is drawn from
the pool of all real word tokens (so with the real word frequencies). Caption length (~58 characters on
average, as real LAION captions) and the rate of lemma hits are therefore realistic, while the content is
a bag of words. Punctuation, case and non-ASCII text come along with the real words.

Generation is vectorised (numpy for the draws, Arrow's list-join for the strings): 4M captions take a few
seconds. Files are cached under `.bench/` keyed by n and seed:

    python benchmarks/synthetic.py 4000000            # -> .bench/captions-4000000-seed0.parquet
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO / ".bench"
SAMPLE = Path(os.environ.get("LAIONET_BENCH_SAMPLE", "/work/shared/data/laion_sample_5k.parquet"))
SYNSETS = Path(os.environ.get("LAIONET_BENCH_SYNSETS", "/work/shared/data/ILSVRC2012_synsets.txt"))
# Bump when the generator changes, so cached files from an older generator are not reused.
GENERATOR_VERSION = 1


@lru_cache(maxsize=4)
def _word_model(sample: str = str(SAMPLE)) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(distinct words, word id of every real token, word count of every real caption)."""
    texts = pq.read_table(sample, columns=["TEXT"]).column("TEXT").combine_chunks()
    texts = pc.drop_null(texts).cast(pa.large_string())
    words = pc.utf8_split_whitespace(texts)  # list<string> per caption
    counts = pc.list_value_length(words).to_numpy(zero_copy_only=False).astype(np.int64)
    counts = counts[counts > 0]
    tokens = pc.list_flatten(words)
    encoded = tokens.dictionary_encode()
    return encoded.dictionary, encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64), counts


def make_captions(n: int, seed: int = 0, sample: str | os.PathLike = SAMPLE) -> pa.Array:
    """`n` synthetic captions as a pyarrow (large) string array, deterministic in (n, seed, sample)."""
    vocabulary, token_words, word_counts = _word_model(str(sample))
    rng = np.random.default_rng(seed)
    lengths = rng.choice(word_counts, size=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    picks = token_words[rng.integers(0, len(token_words), size=int(offsets[-1]))]
    words = vocabulary.take(pa.array(picks))
    lists = pa.LargeListArray.from_arrays(pa.array(offsets), words)
    return pc.binary_join(lists, pa.scalar(" ", pa.large_string()))


def caption_path(n: int, seed: int = 0, directory: Path = BENCH_DIR) -> Path:
    return directory / f"captions-{n}-seed{seed}.parquet"


def write_caption_file(path: str | os.PathLike, n: int, seed: int = 0, row_group_size: int = 500_000) -> Path:
    """Write `n` synthetic captions as parquet with one `TEXT` column, snappy-compressed (as LAION)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"TEXT": make_captions(n, seed)})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="snappy", row_group_size=row_group_size)
    os.replace(tmp, path)
    return path


def cached_caption_file(n: int, seed: int = 0, row_group_size: int = 500_000, directory: Path = BENCH_DIR,
                        log=print) -> Path:
    """The cached file for (n, seed), generated on first use."""
    path = caption_path(n, seed, directory)
    stamp = path.with_name(path.name + ".version")
    wanted = f"{GENERATOR_VERSION} {row_group_size} {SAMPLE}"
    if path.exists() and stamp.exists() and stamp.read_text() == wanted:
        try:
            if pq.ParquetFile(path).metadata.num_rows == n:
                return path
        except Exception:  # noqa: BLE001 - a broken cache file is regenerated
            pass
    start = time.perf_counter()
    write_caption_file(path, n, seed, row_group_size)
    stamp.write_text(wanted)
    log(f"generated {n:,} synthetic captions in {time.perf_counter() - start:.1f} s -> {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rows", type=int, nargs="?", default=4_000_000, help="number of captions (default 4,000,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--row-group-size", type=int, default=500_000)
    parser.add_argument("-o", "--output", type=Path, help="write here instead of the .bench/ cache")
    parser.add_argument("--stats", action="store_true", help="compare length statistics with the real sample")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.output:
        path = write_caption_file(args.output, args.rows, args.seed, args.row_group_size)
        print(f"wrote {args.rows:,} captions in {time.perf_counter() - start:.1f} s -> {path}")
    else:
        path = cached_caption_file(args.rows, args.seed, args.row_group_size)
        print(path)
    if args.stats:
        for name, file in (("real sample", SAMPLE), ("synthetic", path)):
            texts = pq.read_table(file, columns=["TEXT"]).column("TEXT")
            chars = pc.utf8_length(texts).to_numpy(zero_copy_only=False)
            words = pc.list_value_length(pc.utf8_split_whitespace(texts)).to_numpy(zero_copy_only=False)
            print(f"{name:>12}: {len(chars):>10,} captions, chars mean {chars.mean():.1f} median "
                  f"{np.median(chars):.0f}, words mean {words.mean():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
