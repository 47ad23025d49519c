"""The streaming engine: a plain generator in front of an asyncio download loop in a background thread.

    consumer (any thread)  <-- results queue <--  loop thread: downloads (aiohttp)
                                                       +-> decode pool (threads) -+

Backpressure: an item takes a slot before its request starts and gives it back only when the consumer
takes its result, so at most `concurrency + queue_size` items (and their bytes) are alive at once; a slow
consumer pauses the downloads instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit
from urllib.request import url2pathname

from laionet.errors import LaionetError

try:
    import aiohttp
    import PIL  # noqa: F401
    from yarl import URL
except ImportError as exc:
    raise LaionetError(f"fetching images needs the images extra ({exc.name} is missing): "
                       "pip install 'laionet[images]'") from None

from laionet.fetch.config import FetchConfig, FetchResult
from laionet.fetch.decode import decode_image, one_line, read_and_decode
from laionet.fetch.download import Downloaded, download
from laionet.fetch.guard import GuardedResolver

_DONE = object()


class _Crash:
    """An exception that ended the loop itself (not an item's failure), re-raised in the consumer."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def iter_images(items: Iterable[tuple[int, str]], config: FetchConfig = FetchConfig()) -> Iterator[FetchResult]:
    """Fetch and decode `(uid, url or path)` items; yield one `FetchResult` per item as each completes.

    Order is not kept. Closing the generator early (break, `close()`) cancels what is in flight and stops
    the background thread and the decode pool before returning. `items` is read in the download thread,
    a slot at a time, so it may be a lazy generator (but a slow one stalls the downloads).
    """
    engine = _Engine(iter(items), config)
    engine.start()
    try:
        while True:
            result = engine.results.get()
            if result is _DONE:
                return
            if isinstance(result, _Crash):
                raise result.exc
            engine.taken()
            yield result
    finally:
        engine.stop()


def classify(source) -> tuple[str, str]:
    """("url", url) / ("file", path) / ("invalid", why): where an item's bytes come from."""
    if not isinstance(source, str) or not source.strip():
        return "invalid", "empty URL" if source is None or isinstance(source, str) else f"not a string: {source!r}"
    source = source.strip()
    try:
        parts = urlsplit(source)
        if parts.scheme.lower() in ("http", "https"):
            if not URL(source).host:
                return "invalid", f"no host in {source[:200]}"
            return "url", source
    except ValueError as exc:
        return "invalid", one_line(exc)
    if parts.scheme.lower() == "file":
        return "file", url2pathname(parts.path)
    if len(parts.scheme) <= 1:  # no scheme, or a Windows drive letter
        return "file", source
    return "invalid", f"unsupported scheme {parts.scheme}:"


class _HostSlots:
    """At most `limit` requests per host; a host's semaphore is dropped when nobody uses it."""

    def __init__(self, limit: int):
        self.limit = limit
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def slot(self, host: str):
        semaphore = self._slots.setdefault(host, asyncio.Semaphore(self.limit))
        self._users[host] = self._users.get(host, 0) + 1
        try:
            async with semaphore:
                yield
        finally:
            self._users[host] -= 1
            if not self._users[host]:
                del self._users[host], self._slots[host]


class _Engine:
    def __init__(self, items: Iterator[tuple[int, str]], config: FetchConfig):
        self.items = items
        self.config = config
        self.results: queue.SimpleQueue = queue.SimpleQueue()  # bounded by the slots, not by the queue
        self.loop: asyncio.AbstractEventLoop | None = None
        self.main_task: asyncio.Task | None = None
        self.decoder = ThreadPoolExecutor(config.decode_workers, thread_name_prefix="laionet-decode")
        self.thread = threading.Thread(target=self._run, name="laionet-fetch", daemon=True)
        self._started = threading.Event()
        self._slots: asyncio.Semaphore | None = None

    # -- consumer side -------------------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()
        self._started.wait()

    def taken(self) -> None:
        """The consumer took a result: its slot may start another item."""
        with contextlib.suppress(RuntimeError):  # the loop already finished
            self.loop.call_soon_threadsafe(self._slots.release)

    def stop(self) -> None:
        if self.thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.main_task.cancel)
            self.thread.join()
        self.decoder.shutdown(wait=True, cancel_futures=True)

    # -- loop thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        loop = self.loop = asyncio.new_event_loop()
        # aiohttp's threaded DNS lookups run in the default executor: size it for the requests in flight.
        dns_threads = min(self.config.concurrency, 64)
        loop.set_default_executor(ThreadPoolExecutor(dns_threads, thread_name_prefix="laionet-dns"))
        try:
            self.main_task = loop.create_task(self._main())
            self._started.set()
            loop.run_until_complete(self.main_task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, who re-raises it
            self.results.put(_Crash(exc))
        finally:
            self._started.set()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())  # DNS lookup threads
            loop.close()
            self.results.put(_DONE)

    async def _main(self) -> None:
        config = self.config
        self._slots = asyncio.Semaphore(config.concurrency + config.queue_size)
        self._requests = asyncio.Semaphore(config.concurrency)
        self._hosts = _HostSlots(config.per_host)
        resolver = None if config.allow_private_network else GuardedResolver()
        # No connector limits: the semaphores above limit requests *before* their deadlines start, so
        # time spent waiting for a free slot never counts as a timeout.
        connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, resolver=resolver)
        timeout = aiohttp.ClientTimeout(total=None, connect=config.connect_timeout,
                                        sock_connect=config.connect_timeout, sock_read=config.read_timeout)
        headers = {"User-Agent": config.user_agent, "Accept": "image/*,*/*;q=0.8"}
        async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=headers) as session:
            tasks: set[asyncio.Task] = set()
            try:
                for uid, source in self.items:
                    await self._slots.acquire()
                    task = asyncio.ensure_future(self._one(session, uid, source))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.gather(*tasks)
            finally:
                for task in tasks:
                    task.cancel()
                if tasks:
                    await asyncio.gather(*tasks, return_exceptions=True)

    async def _one(self, session: aiohttp.ClientSession, uid: int, source: str) -> None:
        try:
            result = await self._fetch(session, uid, source)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a bug shows as this item's status, the run goes on
            result = FetchResult(uid, source, "internal_error", one_line(exc), None)
        self.results.put(result)

    async def _fetch(self, session: aiohttp.ClientSession, uid: int, source: str) -> FetchResult:
        config = self.config
        kind, target = classify(source)
        loop = asyncio.get_running_loop()
        if kind == "invalid":
            return FetchResult(uid, source, "invalid_url", target, None)
        if kind == "file":
            return await loop.run_in_executor(self.decoder, read_and_decode, uid, source, target, config)
        # Limited per first host (a redirect elsewhere keeps this slot), and before the deadline starts.
        async with self._hosts.slot(URL(target).host), self._requests:
            try:
                fetched = await asyncio.wait_for(download(session, target, config), config.total_timeout)
            except asyncio.TimeoutError:
                fetched = Downloaded("timeout", f"total timeout after {config.total_timeout:g} s")
        if fetched.status != "ok":
            return FetchResult(uid, source, fetched.status, fetched.error, None)
        return await loop.run_in_executor(self.decoder, decode_image, uid, source, fetched.body, config)
