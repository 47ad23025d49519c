"""`laionet captions import`: ImageNet-Captions JSON -> one parquet row per training image (spec §9.1).

The file (`imagenet_captions.json` of mlfoundations/imagenet-captions) is a JSON list of
{filename, title, tags[], description, wnid}. The original built each caption as

    ' '.join([title] + tags + [description])

so every part is followed by one space, empty parts included: no tags gives "title description", an
empty description leaves a trailing space, an empty tag a double space. We keep that string exactly.
The original crashed on a missing or null part; here a missing or null title/tags/description counts as
empty (and is counted), while a missing filename or wnid, or a part of the wrong type, is an error.

Duplicate filenames: the original kept the first caption (`groupby('ic_index').first()`, which also
sorts by filename) but its wnid dict kept the LAST entry's wnid. We keep the first entry whole, in the
same filename order, so `uid` is the row's position in the original's parquet; duplicates whose wnid
differs are counted.

The JSON is read with the standard `json` module in one piece (~100 MB file, ~1 GB of Python objects at
peak): ijson is not a dependency, and the rows must all be seen before sorting anyway.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa

from laionet.errors import LaionetError

PARTS = ("title", "tags", "description")
REQUIRED = ("filename", "wnid")


def caption_text(title: str, tags: list[str], description: str) -> str:
    """The original's caption: title, tags, description, each joined by a single space (empties kept)."""
    return " ".join([title] + list(tags) + [description])


def read_entries(path: str | Path) -> list:
    path = Path(path).expanduser()
    if not path.is_file():
        raise LaionetError(f"ImageNet-Captions file not found: {path}")
    try:
        with path.open("rb") as f:
            entries = json.load(f)
    except json.JSONDecodeError as exc:
        raise LaionetError(f"{path}: not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    except UnicodeDecodeError as exc:
        raise LaionetError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not isinstance(entries, list):
        raise LaionetError(f"{path}: expected a JSON list of {{filename, title, tags, description, wnid}} "
                           f"objects, found a {type(entries).__name__}")
    return entries


def _entry_fields(entry, index: int, path: Path, counts: Counter) -> tuple[str, str, str]:
    """(filename, wnid, caption) of one entry, or a one-line error naming the entry."""
    where = f"{path}: entry {index}"
    if not isinstance(entry, dict):
        raise LaionetError(f"{where}: expected an object, found {type(entry).__name__}")
    for key in REQUIRED:
        value = entry.get(key)
        if not isinstance(value, str) or not value:
            problem = "missing" if value is None else f"not a non-empty string ({value!r})"
            raise LaionetError(f"{where}: key '{key}' is {problem}")
    title, tags, description = (entry.get(key) for key in PARTS)
    for key, value in zip(PARTS, (title, tags, description)):
        counts[f"missing_{key}"] += value is None
    title = "" if title is None else title
    tags = [] if tags is None else tags
    description = "" if description is None else description
    if not isinstance(title, str) or not isinstance(description, str):
        bad = "title" if not isinstance(title, str) else "description"
        raise LaionetError(f"{where}: key '{bad}' is not a string")
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise LaionetError(f"{where}: key 'tags' is not a list of strings")
    return entry["filename"], entry["wnid"], caption_text(title, tags, description)


def resolve_image(images: Path, wnid: str, filename: str) -> str | None:
    """The training image: IMAGES/wnid/filename (ILSVRC train layout) or IMAGES/filename, whichever exists."""
    for candidate in (images / wnid / filename, images / filename):
        if candidate.is_file():
            return str(candidate)
    return None


def import_captions(path: str | Path, images: str | Path | None = None) -> tuple[pa.Table, dict]:
    """The ImageNet-Captions table (uid, filename, wnid, TEXT[, image]) and the import's counts."""
    path = Path(path).expanduser()
    entries = read_entries(path)
    counts: Counter = Counter()
    first: dict[str, tuple[str, str]] = {}
    for index, entry in enumerate(entries):
        filename, wnid, text = _entry_fields(entry, index, path, counts)
        if filename in first:
            counts["duplicates_dropped"] += 1
            counts["duplicates_with_other_wnid"] += first[filename][0] != wnid
        else:
            first[filename] = (wnid, text)
    del entries
    filenames = sorted(first)  # groupby().first() sorts the index
    columns = {"uid": pa.array(range(len(filenames)), pa.int64()),
               "filename": pa.array(filenames, pa.string()),
               "wnid": pa.array([first[f][0] for f in filenames], pa.string()),
               "TEXT": pa.array([first[f][1] for f in filenames], pa.string())}
    if images is not None:
        folder = Path(images).expanduser().resolve()
        if not folder.is_dir():
            raise LaionetError(f"--images: not a folder: {images}")
        found = [resolve_image(folder, first[f][0], f) for f in filenames]
        columns["image"] = pa.array(found, pa.string())
        counts["images_found"] = sum(p is not None for p in found)
        counts["images_missing"] = len(found) - counts["images_found"]
    stats = {"entries": len(first) + counts["duplicates_dropped"], "rows_out": len(filenames),
             "classes": len({w for w, _ in first.values()}), "duplicates_dropped": counts["duplicates_dropped"],
             "duplicates_with_other_wnid": counts["duplicates_with_other_wnid"]}
    stats.update({f"missing_{key}": counts[f"missing_{key}"] for key in PARTS})
    if images is not None:
        stats.update(images_found=counts["images_found"], images_missing=counts["images_missing"])
    return pa.table(columns), stats
