"""Stream images from URLs or local paths: fetched concurrently, checked, decoded to RGB, one result each.

    from laionet.fetch import FetchConfig, iter_images

    for result in iter_images([(uid, url), ...], FetchConfig(concurrency=64)):
        if result.ok:
            model(result.image)

Modules, one job each: `config` (limits and the result record), `guard` (which addresses may be
reached), `download` (one URL -> bytes: redirects, retries, caps), `decode` (bytes -> checked RGB image),
`engine` (the streaming generator), `webdataset` (tar shards), `cli` (`laionet fetch`).
Needs the `images` extra (aiohttp, Pillow).
"""

from laionet.fetch.config import STATUSES, FetchConfig, FetchResult

__all__ = ["STATUSES", "FetchConfig", "FetchResult", "iter_images"]


def __getattr__(name: str):
    # Imported on first use, so that `laionet --help` (which loads `laionet.fetch.cli`) works without the extra.
    if name == "iter_images":
        from laionet.fetch.engine import iter_images

        return iter_images
    raise AttributeError(f"module 'laionet.fetch' has no attribute {name!r}")
