"""Webdataset tar shards: `{uid:012d}.jpg` (or .png, ...) + `{uid:012d}.json`, N samples per shard.

A shard is written under a temporary name and renamed when complete, so a shard that exists is whole.
Rerunning into the same folder removes leftover temporary files, reads which uids the complete shards
hold (`completed()`), and numbers new shards after the last one, so nothing is written twice.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tarfile
import time
from pathlib import Path

from laionet.errors import LaionetError

_SHARD_NAME = re.compile(r"^(?P<prefix>.+)-(?P<index>\d{6})\.tar$")
# Magic bytes -> the extension webdataset decoders key on.
_MAGIC = ((b"\xff\xd8\xff", "jpg"), (b"\x89PNG\r\n\x1a\n", "png"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
          (b"BM", "bmp"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))


def image_extension(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    return "img"


def sample_key(uid: int) -> str:
    return f"{uid:012d}"


class ShardWriter:
    """Write samples into `directory/{prefix}-{index:06d}.tar`, `per_shard` samples per shard."""

    def __init__(self, directory: str | Path, per_shard: int = 1000, prefix: str = "shard"):
        if per_shard < 1:
            raise LaionetError(f"webdataset: per_shard must be at least 1, not {per_shard}")
        self.directory = Path(directory)
        if self.directory.exists() and not self.directory.is_dir():
            raise LaionetError(f"{self.directory}: exists and is not a folder")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.per_shard = per_shard
        self.prefix = prefix
        for leftover in self.directory.glob(f".{prefix}-*.tar.tmp"):
            leftover.unlink()  # an interrupted run's incomplete shard
        self.shards = sorted(p for p in self.directory.glob(f"{prefix}-*.tar") if _SHARD_NAME.match(p.name))
        self._next_index = max((int(_SHARD_NAME.match(p.name)["index"]) for p in self.shards), default=-1) + 1
        self._tar: tarfile.TarFile | None = None
        self._tmp: Path | None = None
        self._count = 0

    def completed(self) -> dict[int, dict]:
        """uid -> its json record, for every sample in the complete shards."""
        records: dict[int, dict] = {}
        for shard in self.shards:
            try:
                with tarfile.open(shard) as tar:
                    for member in tar:
                        if member.name.endswith(".json"):
                            record = json.loads(tar.extractfile(member).read())
                            records[int(record["uid"])] = record
            except (tarfile.TarError, OSError, ValueError, KeyError) as exc:
                raise LaionetError(f"{shard}: not a readable shard ({exc}); "
                                   "remove it to fetch its images again") from None
        return records

    def write(self, uid: int, data: bytes, record: dict) -> None:
        """Add one sample: the encoded image and its json record (which gets the uid)."""
        if self._tar is None:
            self._open_shard()
        key = sample_key(uid)
        self._add(f"{key}.{image_extension(data)}", data)
        self._add(f"{key}.json", json.dumps({"uid": uid, **record}, default=str).encode())
        self._count += 1
        if self._count >= self.per_shard:
            self._finish_shard()

    def close(self) -> None:
        if self._tar is not None:
            self._finish_shard()

    def abort(self) -> None:
        """Drop the shard in progress (its samples will be fetched again by the next run)."""
        if self._tar is not None:
            self._tar.close()
            with contextlib.suppress(FileNotFoundError):
                self._tmp.unlink()
            self._tar = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _open_shard(self) -> None:
        name = f"{self.prefix}-{self._next_index:06d}.tar"
        self._final = self.directory / name
        self._tmp = self.directory / f".{name}.tmp"
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)
        self._count = 0

    def _add(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = int(time.time())
        info.mode = 0o644
        self._tar.addfile(info, io.BytesIO(data))

    def _finish_shard(self) -> None:
        self._tar.close()
        os.replace(self._tmp, self._final)
        self.shards.append(self._final)
        self._tar = None
        self._next_index += 1
