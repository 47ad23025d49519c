"""One URL -> its body bytes, or the reason there are none.

Redirects are followed by hand so that every hop is counted and its address checked. Retries happen only
where waiting can help (408, 429, 5xx, connection resets), with exponential back-off and jitter, or the
server's Retry-After; a retry that would pass the item's deadline is not attempted.
"""

from __future__ import annotations

import asyncio
import errno
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

import aiohttp
from yarl import URL

from laionet.fetch.config import FetchConfig
from laionet.fetch.decode import one_line
from laionet.fetch.guard import BlockedAddress, blocked_reason, literal_ip

REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
MAX_RETRY_AFTER = 60.0  # seconds: a server asking for longer is treated as asking for this
BACKOFF_BASE = 0.5  # seconds before the first retry (doubling, plus up to as much again of jitter)
CHUNK_BYTES = 64 * 1024
NOAI_DIRECTIVES = frozenset({"noai", "noimageai"})
# X-Robots-Tag directives that carry a value after a colon (not a user-agent prefix).
_VALUED_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})


@dataclass
class Downloaded:
    status: str  # "ok" or a FetchResult status
    error: str | None = None
    body: bytes | None = None
    retryable: bool = False
    retry_after: float | None = None  # seconds the server asked us to wait


async def download(session: aiohttp.ClientSession, url: str, config: FetchConfig) -> Downloaded:
    """Fetch `url` with retries. The caller bounds the whole call by `config.total_timeout`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.total_timeout
    attempts = 1
    while True:
        result = await _attempt(session, url, config)
        note = ""
        if result.retryable and attempts <= config.retries:
            wait = result.retry_after if result.retry_after is not None else _backoff(attempts - 1)
            if loop.time() + wait < deadline:
                await asyncio.sleep(wait)
                attempts += 1
                continue
            note = f"; not retried: a {wait:.1f} s wait would pass the {config.total_timeout:g} s deadline"
        if result.status != "ok" and (attempts > 1 or note):
            result.error = f"{result.error} after {attempts} attempt{'s' if attempts > 1 else ''}{note}"
        return result


def _backoff(attempt: int) -> float:
    base = BACKOFF_BASE * 2**attempt
    return base + random.uniform(0, base)  # jitter: clients that failed together do not retry together


async def _attempt(session: aiohttp.ClientSession, url: str, config: FetchConfig) -> Downloaded:
    """One try, redirects included; every network failure becomes a status."""
    try:
        return await _follow_redirects(session, url, config)
    except BlockedAddress as exc:
        return Downloaded("blocked_address", str(exc))
    except aiohttp.ClientConnectorDNSError as exc:
        if isinstance(exc.os_error, BlockedAddress):
            return Downloaded("blocked_address", str(exc.os_error))
        return Downloaded("connection_error", f"DNS lookup failed for {exc.host}")
    except aiohttp.ConnectionTimeoutError:
        return Downloaded("timeout", f"connect timeout after {config.connect_timeout:g} s")
    except aiohttp.SocketTimeoutError:
        return Downloaded("timeout", f"read timeout after {config.read_timeout:g} s")
    except aiohttp.ServerTimeoutError as exc:
        return Downloaded("timeout", one_line(exc))
    except (aiohttp.InvalidURL, ValueError) as exc:
        return Downloaded("invalid_url", one_line(exc))
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, ConnectionResetError) as exc:
        return Downloaded("connection_error", one_line(exc), retryable=True)
    except aiohttp.ClientOSError as exc:
        return Downloaded("connection_error", one_line(exc), retryable=exc.errno == errno.ECONNRESET)
    except (aiohttp.ClientError, OSError) as exc:
        return Downloaded("connection_error", one_line(exc))


async def _follow_redirects(session: aiohttp.ClientSession, url: str, config: FetchConfig) -> Downloaded:
    target = URL(url)
    for _hop in range(config.max_redirects + 1):
        refused = _refuse_target(target, config)
        if refused is not None:
            return refused
        async with session.get(target, allow_redirects=False) as response:
            if response.status in REDIRECT_CODES:
                location = response.headers.get("Location")
                if not location:
                    return Downloaded("http_error", f"HTTP {response.status} without a Location header")
                target = response.url.join(URL(location))
                continue
            return await _read_body(response, config)
    return Downloaded("too_many_redirects", f"more than {config.max_redirects} redirects")


def _refuse_target(target: URL, config: FetchConfig) -> Downloaded | None:
    if target.scheme not in ("http", "https") or not target.host:
        return Downloaded("invalid_url", f"not an http(s) URL: {str(target)[:200]}")
    ip = literal_ip(target.host)
    if ip is not None and not config.allow_private_network:
        reason = blocked_reason(ip)  # hostnames are checked by the resolver; literal IPs skip it
        if reason is not None:
            return Downloaded("blocked_address", f"{ip} is {reason}")
    return None


async def _read_body(response: aiohttp.ClientResponse, config: FetchConfig) -> Downloaded:
    if not 200 <= response.status < 300:
        retryable = response.status in (408, 429) or response.status >= 500
        return Downloaded("http_error", f"HTTP {response.status}", retryable=retryable,
                          retry_after=parse_retry_after(response.headers.get("Retry-After")))
    if config.respect_noai:
        directive = noai_directive(response.headers.getall("X-Robots-Tag", ()), agent="laionet")
        if directive is not None:
            return Downloaded("noai", f"X-Robots-Tag: {directive}")
    if response.content_type.startswith("text/"):  # an HTML error page served with 200; not worth reading
        return Downloaded("not_image", f"content-type {response.content_type}")
    length = response.content_length
    if length is not None and length > config.max_bytes:
        return Downloaded("too_large", f"Content-Length {length:,} over {config.max_bytes:,} bytes")
    body = bytearray()
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        body += chunk
        if len(body) > config.max_bytes:  # no or a false Content-Length: count what arrives
            return Downloaded("too_large", f"body over {config.max_bytes:,} bytes")
    return Downloaded("ok", body=bytes(body))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date), capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def noai_directive(values, agent: str) -> str | None:
    """The noai directive among X-Robots-Tag header values that applies to us (no or our user agent)."""
    for value in values:
        head, sep, rest = value.partition(":")
        head = head.strip().lower()
        bot = None
        if sep and head and "," not in head and " " not in head and head not in _VALUED_DIRECTIVES:
            bot, value = head, rest  # "somebot: noai" speaks to somebot only
        if bot not in (None, agent):
            continue
        for directive in value.split(","):
            directive = directive.strip().lower()
            if directive in NOAI_DIRECTIVES:
                return directive
    return None
