"""Where the class list comes from: `imagenet-1k`, `imagenet-21k`, `wnids:FILE` or `synsets:FILE`.

Each source yields (wnid, lemmas) pairs in its own order. Lemmas come from the synsets file when one is
given (the original system's lemma table is built from it, spec §1.2), else from timm's tables.
"""

from __future__ import annotations

import re
from pathlib import Path

from laionet.errors import LaionetError
from laionet.vocab import tables

WNID = re.compile(r"^n\d{8}$")
SOURCES_HELP = "imagenet-1k, imagenet-21k, wnids:FILE or synsets:FILE"


def load_source(source: str) -> list[tuple[str, list[str]]]:
    kind, sep, arg = source.partition(":")
    if not sep and source in ("imagenet-1k", "imagenet-21k"):
        return [(wnid, tables.lemmas_by_wnid()[wnid]) for wnid in tables.class_list(source)]
    if kind == "wnids" and arg:
        return _from_wnids_file(Path(arg))
    if kind == "synsets" and arg:
        return _from_synsets_file(Path(arg))
    raise LaionetError(f"unknown vocabulary source {source!r}; use one of: {SOURCES_HELP}")


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise LaionetError(f"{path}: file not found")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LaionetError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None


def _check_wnid(wnid: str, path: Path, line_no: int) -> None:
    if not WNID.match(wnid):
        raise LaionetError(f"{path}:{line_no}: {wnid!r} is not a WordNet id like n02119789")
    if not tables.known(wnid):
        raise LaionetError(f"{path}:{line_no}: unknown wnid {wnid!r} (not an ImageNet-21k synset)")


def _from_wnids_file(path: Path) -> list[tuple[str, list[str]]]:
    """One wnid per line (anything after the first whitespace is ignored; '#' starts a comment)."""
    rows, seen = [], set()
    for line_no, line in enumerate(_read_text(path).splitlines(), start=1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        wnid = fields[0]
        _check_wnid(wnid, path, line_no)
        if wnid in seen:
            raise LaionetError(f"{path}:{line_no}: wnid {wnid} is listed twice")
        seen.add(wnid)
        rows.append((wnid, tables.lemmas_by_wnid()[tables.resolve(wnid)]))
    if not rows:
        raise LaionetError(f"{path}: no wnids found")
    return rows


def _from_synsets_file(path: Path) -> list[tuple[str, list[str]]]:
    """The original class file: header 'id: lemmas', then 'wnid: lemma, lemma, ...' lines (spec §1.1)."""
    lines = _read_text(path).splitlines()
    if not lines or lines[0].strip() != "id: lemmas":
        raise LaionetError(f"{path}:1: expected the header 'id: lemmas' of an ILSVRC synsets file")
    rows, seen = [], set()
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        wnid, sep, lemmas = line.partition(": ")
        if not sep or not lemmas.strip():
            raise LaionetError(f"{path}:{line_no}: expected 'wnid: lemma, lemma, ...', got {line[:60]!r}")
        wnid = wnid.strip()
        _check_wnid(wnid, path, line_no)
        if wnid in seen:
            raise LaionetError(f"{path}:{line_no}: wnid {wnid} is listed twice")
        seen.add(wnid)
        rows.append((wnid, lemmas.split(", ")))
    if not rows:
        raise LaionetError(f"{path}: no synsets found")
    return rows
