"""The image streaming engine against a loopback HTTP server with healthy and faulty routes."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import struct
import tarfile
import threading
import time
import zlib
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("PIL")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from aiohttp import web  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from PIL import Image  # noqa: E402

from laionet.fetch import FetchConfig, iter_images  # noqa: E402
from laionet.fetch.download import noai_directive, parse_retry_after  # noqa: E402
from laionet.fetch.webdataset import ShardWriter  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
IMAGES = Path(os.environ.get("LAIONET_SHARED_DATA", REPO.parent / "shared" / "data")) / "imagenet_samples"
MAX_BYTES = 2**20
# Small timeouts keep the whole file fast; the slowest fault ends at the 2 s deadline.
FAST = FetchConfig(concurrency=32, per_host=32, connect_timeout=1.0, read_timeout=1.0, total_timeout=2.0,
                   retries=2, max_bytes=MAX_BYTES, allow_private_network=True)
LARGEST_TIMEOUT = 2.0


def sample_names() -> list[str]:
    names = sorted(p.name for p in IMAGES.glob("*.JPEG"))
    assert len(names) >= 10, f"sample images not found in {IMAGES}"
    return names


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of width x height whose pixels are all zero: ~50 KB that would decode to 400 Mpx."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class LoopbackServer:
    """aiohttp.web on 127.0.0.1 in its own thread; `hits` counts requests per path."""

    def __init__(self):
        self.samples = {name: (IMAGES / name).read_bytes() for name in sample_names()}
        first = next(iter(self.samples.values()))
        self.gray = jpeg_bytes(Image.open(io.BytesIO(first)).convert("L"))
        self.tiny = jpeg_bytes(Image.new("RGB", (5, 5), "red"))
        self.bomb = png_bomb()
        self.hits: Counter = Counter()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="test-http-server", daemon=True)
        self.thread.start()
        assert self._ready.wait(10)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def count(self, prefix: str) -> int:
        with self._lock:
            return sum(n for path, n in self.hits.items() if path.startswith(prefix))

    def _serve(self):
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._start())
        self._ready.set()
        self.loop.run_forever()

    async def _start(self):
        app = web.Application(middlewares=[self._count_hits])
        app.add_routes([
            web.get("/img/{name}", self.image), web.get("/gray", self.grayscale), web.get("/tiny", self.tiny_image),
            web.get("/slow", self.slow), web.get("/trickle", self.trickle), web.get("/status/{code}", self.status),
            web.get("/flaky/{code}/{key}", self.flaky), web.get("/truncated", self.truncated),
            web.get("/html", self.html), web.get("/octet-html", self.octet_html), web.get("/loop/{n}", self.loop_),
            web.get("/redirect/{name}", self.redirect), web.get("/bomb", self.bomb_png),
            web.get("/noai/{name}", self.noai), web.get("/big", self.big), web.get("/big-chunked", self.big_chunked),
        ])
        self.runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    @web.middleware
    async def _count_hits(self, request, handler):
        with self._lock:
            self.hits[request.path] += 1
        return await handler(request)

    def _jpeg(self, body: bytes, **headers) -> web.Response:
        return web.Response(body=body, content_type="image/jpeg", headers=headers)

    async def image(self, request):
        return self._jpeg(self.samples[request.match_info["name"]])

    async def grayscale(self, request):
        return self._jpeg(self.gray)

    async def tiny_image(self, request):
        return self._jpeg(self.tiny)

    async def slow(self, request):
        await asyncio.sleep(30)  # far past the read timeout; cancelled when the client gives up
        return self._jpeg(self.tiny)

    async def trickle(self, request):
        """One byte every 0.25 s, forever: never silent for a read timeout, so only the deadline ends it."""
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
        await response.prepare(request)
        while True:
            await response.write(b"\xff")
            await asyncio.sleep(0.25)

    async def status(self, request):
        return web.Response(status=int(request.match_info["code"]), text="no")

    async def flaky(self, request):
        """Fails with the code on a key's first request, serves an image after (429 asks for 1 s)."""
        if self.hits[request.path] == 1:
            code = int(request.match_info["code"])
            return web.Response(status=code, headers={"Retry-After": "1"} if code == 429 else {})
        return self._jpeg(next(iter(self.samples.values())))

    async def truncated(self, request):
        body = next(iter(self.samples.values()))
        return self._jpeg(body[: len(body) // 2])

    async def html(self, request):
        return web.Response(text="<html><body>not found</body></html>", content_type="text/html")

    async def octet_html(self, request):
        return web.Response(body=b"<html><body>an image, honest</body></html>", content_type="application/octet-stream")

    async def loop_(self, request):
        raise web.HTTPFound(f"/loop/{int(request.match_info['n']) + 1}")

    async def redirect(self, request):
        raise web.HTTPFound(f"/img/{request.match_info['name']}")

    async def bomb_png(self, request):
        return web.Response(body=self.bomb, content_type="image/png")

    async def noai(self, request):
        return self._jpeg(self.samples[request.match_info["name"]], **{"X-Robots-Tag": "noai"})

    async def big(self, request):
        return self._jpeg(b"\xff" * (MAX_BYTES + 1))

    async def big_chunked(self, request):
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})  # no Content-Length
        await response.prepare(request)
        for _ in range(4 * MAX_BYTES // 65536):
            await response.write(b"\xff" * 65536)
        await response.write_eof()
        return response


@pytest.fixture(scope="module")
def server():
    srv = LoopbackServer()
    yield srv
    srv.stop()


# One URL per fault, with the status it must end in.
FAULTS = {
    "/slow": "timeout", "/trickle": "timeout", "/status/404": "http_error", "/status/500": "http_error",
    "/truncated": "decode_error", "/html": "not_image", "/octet-html": "not_image",
    "/loop/0": "too_many_redirects", "/bomb": "decompression_bomb", "/tiny": "too_small", "/big": "too_large",
    "/big-chunked": "too_large",
}


def fetch_all(items, config=FAST) -> dict[int, object]:
    results = {}
    for result in iter_images(items, config):
        assert result.uid not in results, f"uid {result.uid} yielded twice"
        results[result.uid] = result
    return results


def test_every_fault_ends_in_its_status_within_the_deadline(server):
    name = sample_names()[0]
    cases = {**FAULTS, f"/redirect/{name}": "ok", f"/img/{name}": "ok", f"/noai/{name}": "noai", "/gray": "ok"}
    items = [(uid, server.url(path)) for uid, path in enumerate(cases)]
    start = time.perf_counter()
    results = fetch_all(items)
    seconds = time.perf_counter() - start
    assert sorted(results) == list(range(len(cases)))
    got = {path: (results[uid].status, results[uid].error) for uid, path in enumerate(cases)}
    assert {path: status for path, (status, _) in got.items()} == cases, got
    assert seconds < 3 * LARGEST_TIMEOUT
    assert got["/status/404"][1] == "HTTP 404"
    assert got["/status/500"][1].startswith("HTTP 500 after ")
    assert got["/slow"][1] == "read timeout after 1 s"
    assert got["/trickle"][1] == "total timeout after 2 s"
    for path, (status, error) in got.items():
        assert (error is None) == (status == "ok"), path
        assert error is None or "\n" not in error
    assert server.count("/noai") == 1  # asked once, refused from the headers
    assert "400000000 pixels" in got["/bomb"][1]  # refused from the header, never decoded


def test_images_come_back_as_rgb_of_their_size(server):
    names = sample_names()[:20]
    items = [(uid, server.url(f"/img/{name}")) for uid, name in enumerate(names)]
    results = fetch_all(items + [(99, server.url("/gray"))])
    for uid, name in enumerate(names):
        expected = Image.open(IMAGES / name)
        result = results[uid]
        assert result.status == "ok" and result.error is None
        assert result.image.mode == "RGB" and result.image.size == expected.size
        assert (result.width, result.height, result.mode) == (*expected.size, expected.mode)
        assert result.raw == (IMAGES / name).read_bytes()
    gray = results[99]
    assert gray.status == "ok" and gray.mode == "L" and gray.image.mode == "RGB"


def test_paper_rule_rejects_non_rgb(server):
    paper = replace(FAST, convert_non_rgb=False)
    results = fetch_all([(0, server.url("/gray")), (1, server.url(f"/img/{sample_names()[0]}"))], paper)
    assert (results[0].status, results[0].error, results[0].image) == ("non_rgb", "mode L", None)
    assert results[1].status == "ok"


def test_retries_transient_errors_and_honours_retry_after(server):
    start = time.perf_counter()
    results = fetch_all([(0, server.url("/flaky/503/a")), (1, server.url("/flaky/429/b"))])
    seconds = time.perf_counter() - start
    assert results[0].status == "ok" and results[1].status == "ok"
    assert server.hits["/flaky/503/a"] == 2 and server.hits["/flaky/429/b"] == 2
    assert seconds >= 1.0  # waited the server's Retry-After: 1


def test_no_retry_on_client_errors(server):
    before = server.hits["/status/404"]
    fetch_all([(0, server.url("/status/404"))])
    assert server.hits["/status/404"] == before + 1


def test_default_config_refuses_loopback_without_connecting(server):
    config = FetchConfig(total_timeout=2.0)  # allow_private_network=False
    name = sample_names()[0]
    urls = [server.url(f"/img/{name}"), server.url(f"/img/{name}", host="localhost"),
            f"http://[::1]:{server.port}/img/{name}", f"http://[::ffff:127.0.0.1]:{server.port}/img/{name}",
            "http://10.0.0.1/x.jpg", "http://169.254.169.254/latest/meta-data"]
    before = server.count("/img")
    results = fetch_all(list(enumerate(urls)), config)
    assert [results[uid].status for uid in range(len(urls))] == ["blocked_address"] * len(urls)
    assert "loopback" in results[0].error and "localhost resolves to" in results[1].error
    assert "link-local" in results[5].error
    assert server.count("/img") == before


def test_bad_inputs_are_statuses(server, tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    items = [(0, None), (1, ""), (2, "ftp://example.com/a.jpg"), (3, "http://"), (4, f"http://127.0.0.1:{port}/x"),
             (5, str(tmp_path / "missing.jpg")), (6, "http://[::1/x")]
    statuses = {uid: r.status for uid, r in fetch_all(items).items()}
    assert statuses == {0: "invalid_url", 1: "invalid_url", 2: "invalid_url", 3: "invalid_url",
                        4: "connection_error", 5: "missing_file", 6: "invalid_url"}


def test_local_files_take_the_same_decode_path(tmp_path):
    name = sample_names()[0]
    (tmp_path / "gray.jpg").write_bytes(jpeg_bytes(Image.open(IMAGES / name).convert("L")))
    (tmp_path / "notes.txt").write_text("hello")
    items = [(0, str(IMAGES / name)), (1, (IMAGES / name).as_uri()), (2, str(tmp_path / "gray.jpg")),
             (3, str(tmp_path / "notes.txt")), (4, str(tmp_path))]
    results = fetch_all(items, FetchConfig())
    assert [results[uid].status for uid in range(5)] == ["ok", "ok", "ok", "not_image", "missing_file"]
    assert results[0].image.size == Image.open(IMAGES / name).size


def test_pixel_limit_is_the_configured_one(server):
    config = replace(FAST, max_pixels=10_000)
    result = fetch_all([(0, server.url(f"/img/{sample_names()[0]}"))], config)[0]
    assert result.status == "decompression_bomb" and "over 10,000" in result.error


def test_thousand_urls_with_ten_percent_faults(server):
    names = sample_names()
    fault_paths = list(FAULTS) + ["/noai/" + names[0]]
    items, expected = [], {}
    for uid in range(1000):
        if uid % 10 == 3:
            path = fault_paths[(uid // 10) % len(fault_paths)]
        elif uid % 10 == 7:
            path = "/gray"
        elif uid % 50 == 5:
            path = f"/flaky/503/{uid}"  # transient: ok on the retry
        else:
            path = f"/img/{names[uid % len(names)]}"
        items.append((uid, server.url(path)))
        expected[uid] = "bad" if uid % 10 == 3 else "ok"
    config = replace(FAST, concurrency=64, per_host=64, total_timeout=3.0)  # a margin for a busy machine
    start = time.perf_counter()
    results = fetch_all(items, config)
    seconds = time.perf_counter() - start
    assert sorted(results) == list(range(1000))
    bad = [uid for uid, want in expected.items() if want == "bad" and results[uid].status == "ok"]
    failed = {uid: (results[uid].status, results[uid].error) for uid, want in expected.items()
              if want == "ok" and results[uid].status != "ok"}
    assert not bad and not failed, (bad, failed)
    assert all(results[uid].image.mode == "RGB" for uid, want in expected.items() if want == "ok")
    assert seconds < 30, seconds


def test_slow_consumer_pauses_downloads(server):
    names = sample_names()
    config = replace(FAST, concurrency=4, per_host=4, queue_size=4)
    items = [(uid, server.url(f"/img/{names[uid % len(names)]}?n={uid}")) for uid in range(200)]
    before = server.count("/img")
    results = iter_images(items, config)
    for taken, _ in enumerate(results, start=1):
        time.sleep(0.02)
        if taken == 20:
            break
    time.sleep(0.3)  # were the downloads not paused, they would run on now
    requested = server.count("/img") - before
    results.close()
    assert requested <= 20 + config.concurrency + config.queue_size + 1


def fetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("laionet-fetch", "laionet-decode", "laionet-dns"))]


def test_closing_early_stops_the_thread_and_pool(server):
    names = sample_names()
    items = [(uid, server.url(f"/img/{names[uid % len(names)]}")) for uid in range(300)]
    items[5] = (5, server.url("/slow"))  # something still in flight when we stop
    results = iter_images(items, FAST)
    first = [next(results) for _ in range(3)]
    assert all(r.status == "ok" for r in first)
    assert fetch_threads()
    start = time.perf_counter()
    results.close()
    assert time.perf_counter() - start < 2
    assert not fetch_threads()


def test_break_stops_the_thread_too(server):
    for _ in iter_images([(uid, server.url("/gray")) for uid in range(100)], FAST):
        break
    assert not fetch_threads()


def test_an_exception_in_the_input_reaches_the_consumer():
    def items():
        yield 1, str(IMAGES / sample_names()[0])
        raise RuntimeError("input broke")

    with pytest.raises(RuntimeError, match="input broke"):
        list(iter_images(items(), FetchConfig()))
    assert not fetch_threads()


def test_retry_after_and_noai_parsing():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("86400") == 60.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert noai_directive(["noai"], "laionet") == "noai"
    assert noai_directive(["noindex, NoImageAI"], "laionet") == "noimageai"
    assert noai_directive(["otherbot: noai"], "laionet") is None
    assert noai_directive(["laionet: noai"], "laionet") == "noai"
    assert noai_directive(["unavailable_after: 2030-01-01, noai"], "laionet") == "noai"
    assert noai_directive(["noindex"], "laionet") is None


# -- webdataset -------------------------------------------------------------------------------------


def test_shard_writer_writes_whole_shards_and_resumes(tmp_path):
    data = (IMAGES / sample_names()[0]).read_bytes()
    with ShardWriter(tmp_path, per_shard=10) as writer:
        for uid in range(25):
            writer.write(uid, data, {"url": f"u{uid}", "status": "ok", "width": 1, "height": 2})
    shards = sorted(tmp_path.glob("*.tar"))
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    with tarfile.open(shards[0]) as tar:
        names = tar.getnames()
        assert names[:2] == ["000000000000.jpg", "000000000000.json"] and len(names) == 20
        assert tar.extractfile("000000000003.jpg").read() == data
        assert json.loads(tar.extractfile("000000000003.json").read())["url"] == "u3"
        assert Image.open(tar.extractfile("000000000003.jpg")).size == Image.open(IMAGES / sample_names()[0]).size

    # An interrupted run leaves no partial shard behind; the next one skips what is complete.
    with pytest.raises(KeyboardInterrupt), ShardWriter(tmp_path, per_shard=10) as writer:
        assert set(writer.completed()) == set(range(25))
        writer.write(25, data, {"url": "u25"})
        raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in shards]
    (tmp_path / ".shard-000003.tar.tmp").write_bytes(b"half")  # a crash's leftover
    writer = ShardWriter(tmp_path, per_shard=10)
    writer.write(25, data, {"url": "u25"})
    writer.close()
    assert not list(tmp_path.glob(".*.tmp"))
    assert set(ShardWriter(tmp_path).completed()) == set(range(26))


# -- CLI --------------------------------------------------------------------------------------------


def test_cli_end_to_end_and_resume(server, tmp_path):
    from laionet.fetch.cli import command

    names = sample_names()
    paths = [f"/img/{names[i]}" for i in range(8)] + ["/gray", "/status/404", "/html", "/slow"]
    dataset = tmp_path / "laionet.parquet"
    uids = [1000 - 7 * i for i in range(len(paths))]  # not sorted, not the row ordinal
    pq.write_table(pa.table({"uid": pa.array(uids, pa.int64()), "URL": [server.url(p) for p in paths],
                             "TEXT": ["a caption"] * len(paths)}), dataset)
    out = tmp_path / "fetched.parquet"
    shards = tmp_path / "shards"
    args = [str(dataset), "-o", str(out), "--save-images", str(shards), "--preset", "clean", "--timeout", "2",
            "--allow-private-network", "--no-progress"]
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pylist()
    assert [row["uid"] for row in table] == sorted(uids)
    assert set(table[0]) == {"uid", "url", "status", "error", "width", "height", "mode", "bytes"}
    by_path = {paths[uids.index(row["uid"])]: row for row in table}
    assert [by_path[p]["status"] for p in paths] == ["ok"] * 9 + ["http_error", "not_image", "timeout"]
    assert by_path["/gray"]["mode"] == "L" and by_path[paths[0]]["bytes"] == (IMAGES / names[0]).stat().st_size
    assert "fetch: rows 12, ok 9" in result.output and "http error 1" in result.output
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    assert manifest["stages"]["fetch"]["counts"]["ok"] == 9
    with tarfile.open(next(shards.glob("*.tar"))) as tar:
        assert len(tar.getnames()) == 18

    # A rerun fetches only what the shards do not hold, and writes the same table.
    before = server.count("/img")
    result = CliRunner().invoke(command, args)
    assert result.exit_code == 0, result.output
    assert server.count("/img") == before
    assert pq.read_table(out).to_pylist() == table


def test_cli_preset_paper_rejects_grayscale(server, tmp_path):
    from laionet.fetch.cli import command

    dataset = tmp_path / "d.parquet"
    pq.write_table(pa.table({"url": [server.url("/gray")]}), dataset)
    out = tmp_path / "o.parquet"
    result = CliRunner().invoke(command, [str(dataset), "-o", str(out), "--preset", "paper",
                                          "--allow-private-network", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).to_pylist()[0]["status"] == "non_rgb"
    assert pq.read_table(out).to_pylist()[0]["uid"] == 0


@pytest.mark.parametrize("make, args, message", [
    (None, [], "no such file"),
    ({"caption": ["x"]}, [], "no url column found"),
    ({"URL": ["x"]}, ["--url-col", "link"], "no column 'link'"),
    ({"URL": [1]}, [], "not URLs or paths"),
    ({"URL": ["x"], "uid": ["a"]}, [], "not integers"),
])
def test_cli_bad_input_is_one_line(tmp_path, make, args, message):
    from laionet.fetch.cli import command

    dataset = tmp_path / "d.parquet"
    if make is not None:
        pq.write_table(pa.table(make), dataset)
    out = tmp_path / "o.parquet"
    result = CliRunner().invoke(command, [str(dataset), "-o", str(out), "--no-progress", *args])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()
