"""What a fetch run is allowed to do (`FetchConfig`) and what it says about each item (`FetchResult`)."""

from __future__ import annotations

from dataclasses import dataclass

from laionet import __version__
from laionet.errors import LaionetError

# One short code per way an item can end; `error` carries the one-line detail.
STATUSES = (
    "ok",
    "http_error",  # a non-2xx answer (after retries for 408, 429 and 5xx)
    "timeout",  # connect, read (no byte for read_timeout) or total (the item's whole deadline)
    "too_large",  # body over max_bytes (Content-Length, streamed count, or file size)
    "too_many_redirects",
    "not_image",  # a text/* answer, or bytes no image decoder recognises
    "decode_error",  # recognised but broken (truncated, corrupt)
    "too_small",  # width * height < min_size ** 2
    "non_rgb",  # not RGB and convert_non_rgb is off (the paper's rule)
    "decompression_bomb",  # width * height > max_pixels: rejected from the header, never decoded
    "noai",  # X-Robots-Tag: noai / noimageai
    "blocked_address",  # resolves to a private, loopback, link-local, multicast or reserved address
    "connection_error",  # refused, reset, DNS failure, TLS failure
    "invalid_url",  # empty, unparsable, or a scheme other than http(s) and file
    "missing_file",  # a local path that cannot be read
    "internal_error",  # a bug in laionet: reported per item rather than ending the run
)


@dataclass(frozen=True)
class FetchConfig:
    concurrency: int = 64  # requests in flight
    per_host: int = 8  # requests in flight per host (a wait for a slot does not count against timeouts)
    connect_timeout: float = 5.0
    read_timeout: float = 10.0  # longest silence while waiting for headers or body bytes
    total_timeout: float = 30.0  # deadline for an item: every redirect hop, retry and back-off included
    retries: int = 2  # only on 408, 429, 5xx and connection resets
    max_bytes: int = 20 * 2**20
    max_redirects: int = 5
    max_pixels: int = 89_478_485  # Pillow's decompression-bomb limit
    min_size: int = 10  # reject if width * height < min_size ** 2 (the original's 10 x 10)
    convert_non_rgb: bool = True  # False reproduces the paper: non-RGB images are rejected
    respect_noai: bool = True
    allow_private_network: bool = False
    user_agent: str = f"laionet/{__version__} (+https://github.com/laionet)"
    decode_workers: int = 2  # threads: Pillow releases the GIL while decoding
    queue_size: int = 256  # results waiting for the consumer before downloads pause

    def __post_init__(self):
        for name in ("concurrency", "per_host", "decode_workers", "queue_size"):
            if getattr(self, name) < 1:
                raise LaionetError(f"fetch: {name} must be at least 1, not {getattr(self, name)}")
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            if not getattr(self, name) > 0:
                raise LaionetError(f"fetch: {name} must be positive, not {getattr(self, name)}")
        for name in ("retries", "max_redirects", "min_size", "max_bytes", "max_pixels"):
            if getattr(self, name) < 0:
                raise LaionetError(f"fetch: {name} must not be negative, not {getattr(self, name)}")


@dataclass
class FetchResult:
    uid: int
    source: str  # the URL or path, as given
    status: str  # "ok" or one of STATUSES
    error: str | None  # one line of detail, None when ok
    image: object | None  # PIL.Image.Image in RGB, only when ok
    raw: bytes | None = None  # the encoded bytes when ok (for saving); callers may drop it
    width: int | None = None  # known for ok and for rejections made after reading the header
    height: int | None = None
    mode: str | None = None  # the original mode, before conversion

    @property
    def ok(self) -> bool:
        return self.status == "ok"
