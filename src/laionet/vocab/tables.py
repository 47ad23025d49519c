"""WordNet facts for ImageNet synsets, read from timm's reference tables.

timm ships, as package data, the ImageNet-1k and ImageNet-21k synset lists and, for all 21,843 synsets,
their lemmas and WordNet definitions. We read those text files directly (without importing timm, which
would import torch), so the vocabulary needs no WordNet download and no network.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

from laionet.errors import LaionetError

# The original class file lists Siberian husky under n02112837; WordNet lookups in the original code
# special-cased it to the real synset (spec §1.1, §3.1).
ALIASES = {"n02112837": "n02110185"}


@functools.lru_cache(maxsize=1)
def info_dir() -> Path:
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise LaionetError("the vocabulary needs timm's synset tables: pip install timm")
    path = Path(spec.submodule_search_locations[0]) / "data" / "_info"
    if not (path / "imagenet_synset_to_lemma.txt").exists():
        raise LaionetError(f"timm's synset tables were not found in {path}; reinstall timm")
    return path


def _read_lines(name: str) -> list[str]:
    return (info_dir() / name).read_text(encoding="utf-8").splitlines()


def _read_tsv(name: str) -> dict[str, str]:
    table = {}
    for line in _read_lines(name):
        if line.strip():
            wnid, _, value = line.partition("\t")
            table[wnid.strip()] = value.strip()
    return table


@functools.lru_cache(maxsize=1)
def lemmas_by_wnid() -> dict[str, list[str]]:
    """wnid -> its WordNet lemmas in WordNet order (e.g. ['kit fox', 'Vulpes macrotis'])."""
    return {wnid: value.split(", ") for wnid, value in _read_tsv("imagenet_synset_to_lemma.txt").items()}


@functools.lru_cache(maxsize=1)
def definitions_by_wnid() -> dict[str, str]:
    return _read_tsv("imagenet_synset_to_definition.txt")


@functools.cache
def class_list(name: str) -> list[str]:
    """A classifier head's synsets in class-index order ('imagenet-1k' or 'imagenet-21k')."""
    files = {"imagenet-1k": "imagenet_synsets.txt", "imagenet-21k": "imagenet21k_goog_synsets.txt",
             "imagenet-22k": "imagenet22k_synsets.txt"}
    return [line.strip() for line in _read_lines(files[name]) if line.strip()]


def resolve(wnid: str) -> str:
    """The wnid whose WordNet facts describe `wnid` (handles the original file's husky alias)."""
    return ALIASES.get(wnid, wnid)


def known(wnid: str) -> bool:
    return resolve(wnid) in lemmas_by_wnid()


def head_name(wnid: str) -> str:
    """NLTK's synset head name: the first lemma, lower-cased (e.g. 'siberian husky')."""
    return lemmas_by_wnid()[resolve(wnid)][0].replace("_", " ").lower()


def definition(wnid: str) -> str:
    return definitions_by_wnid()[resolve(wnid)]
