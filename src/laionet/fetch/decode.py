"""Bytes -> checked RGB image. The same path serves downloads and local files.

Checks run from the header before any pixel is decoded (size limits, mode), so a decompression bomb
costs a few hundred bytes of parsing, not gigabytes of memory.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from laionet.fetch.config import FetchConfig, FetchResult

# Formats opened at all: the common web formats. Others (EPS runs Ghostscript, for one) are refused.
_WANTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "AVIF")
_formats: tuple[str, ...] | None = None


def _safe_formats() -> tuple[str, ...]:
    global _formats
    if _formats is None:
        Image.init()
        _formats = tuple(name for name in _WANTED_FORMATS if name in Image.OPEN)
    return _formats


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__


def decode_image(uid: int, source: str, data: bytes, config: FetchConfig) -> FetchResult:
    """Decode `data` under the config's limits; never raises for bad bytes."""

    def reject(status: str, error: str, **known) -> FetchResult:
        return FetchResult(uid, source, status, error, None, **known)

    try:
        image = Image.open(io.BytesIO(data), formats=_safe_formats())
    except Image.DecompressionBombError as exc:  # Pillow's own check, at twice its limit
        return reject("decompression_bomb", one_line(exc))
    except UnidentifiedImageError:
        return reject("not_image", f"not a recognised image ({len(data):,} bytes)")
    except Exception as exc:  # noqa: BLE001 - any parser failure is this row's problem only
        return reject("decode_error", one_line(exc))

    width, height = image.size
    known = {"width": width, "height": height, "mode": image.mode}
    pixels = width * height
    if pixels > config.max_pixels:
        return reject("decompression_bomb", f"{width}x{height} = {pixels:,} pixels, over {config.max_pixels:,}",
                      **known)
    if pixels < config.min_size ** 2:
        return reject("too_small", f"{width}x{height} is under {config.min_size}x{config.min_size} pixels", **known)
    if image.mode != "RGB" and not config.convert_non_rgb:
        return reject("non_rgb", f"mode {image.mode}", **known)
    try:
        image.load()  # the full decode: truncated or corrupt data fails here
        rgb = image if image.mode == "RGB" else _to_rgb(image)
    except Image.DecompressionBombError as exc:
        return reject("decompression_bomb", one_line(exc), **known)
    except Exception as exc:  # noqa: BLE001
        return reject("decode_error", one_line(exc), **known)
    return FetchResult(uid, source, "ok", None, rgb, raw=data, **known)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Transparent pixels become white (what a browser shows), not whatever colour they hide."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def read_and_decode(uid: int, source: str, path: str, config: FetchConfig) -> FetchResult:
    """A local file through the same checks as a download (the size cap included)."""
    try:
        size = Path(path).stat().st_size
        if size > config.max_bytes:
            return FetchResult(uid, source, "too_large", f"file of {size:,} bytes, over {config.max_bytes:,}", None)
        data = Path(path).read_bytes()
    except OSError as exc:
        return FetchResult(uid, source, "missing_file", one_line(exc), None)
    return decode_image(uid, source, data, config)
