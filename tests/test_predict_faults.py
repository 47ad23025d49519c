"""The issue's acceptance run, end to end through `laionet predict`: 1,000 loopback URLs with 10 % faults.

"Every row has a status, no faulty or noai row gets a prediction, every healthy and every grayscale image
does, and the run never waits past its timeouts."

The loopback server is the one of tests/test_fetch.py (imported, not copied). `laionet predict` has no
timeout options, so the run uses the fetch defaults (read timeout 10 s, item deadline 30 s): the faults are
the ones that fail fast, plus a few `/slow` rows that stay silent past the 10 s read timeout. `/trickle`
(which only the 30 s deadline ends) is left out to keep the test short. `/big` and `/big-chunked` are
served over predict's own `max_bytes` (test_fetch's are sized for its 1 MiB limit).
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

pytest.importorskip("aiohttp")
pytest.importorskip("PIL")
pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from aiohttp import web  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from test_fetch import LoopbackServer, sample_names  # noqa: E402  (tests/ is on sys.path under pytest)

from laionet.cli import main  # noqa: E402
from laionet.fetch import FetchConfig  # noqa: E402
from laionet.vocab.tables import class_list  # noqa: E402

ROWS = 1000
DEFAULTS = FetchConfig()  # what `laionet predict` fetches with, apart from its CLI options
PREDICT_MAX_BYTES = DEFAULTS.max_bytes

# Terminal faults (10 % of the rows in all), each with the status it must end in.
FAULTS = {
    "/slow": (3, "timeout"),  # silent past the 10 s read timeout
    "/status/404": (10, "http_error"),
    "/status/500": (8, "http_error"),  # retried, then given up
    "/truncated": (10, "decode_error"),
    "/html": (10, "not_image"),
    "/octet-html": (8, "not_image"),
    "/loop/0": (8, "too_many_redirects"),
    "/bomb": (5, "decompression_bomb"),
    "/tiny": (8, "too_small"),
    "/big": (5, "too_large"),
    "/big-chunked": (5, "too_large"),
    "/noai/{name}": (20, "noai"),
}
GRAY = 50  # 5 % grayscale: converted to RGB, so predicted
RECOVERED = {"/flaky/503/{key}": 5, "/flaky/429/{key}": 5}  # fail once, then serve: must end ok


class BigServer(LoopbackServer):
    """test_fetch's server with /big and /big-chunked over predict's default max_bytes, not test_fetch's."""

    async def big(self, request):
        return self._jpeg(b"\xff" * (PREDICT_MAX_BYTES + 1))

    async def big_chunked(self, request):
        response = web.StreamResponse(headers={"Content-Type": "image/jpeg"})  # no Content-Length
        await response.prepare(request)
        chunk = b"\xff" * 2**20
        for _ in range(PREDICT_MAX_BYTES // len(chunk) + 2):
            await response.write(chunk)
        await response.write_eof()
        return response


@pytest.fixture(scope="module")
def server():
    srv = BigServer()
    yield srv
    srv.stop()



def build_rows(server) -> dict[int, tuple[str, str]]:
    """uid -> (URL, kind): kind is the fault's expected status, or 'healthy', 'gray', 'recovered'."""
    names = sample_names()
    paths: list[tuple[str, str]] = []
    for route, (count, status) in FAULTS.items():
        paths += [(route.format(name=names[i % len(names)]), status) for i in range(count)]
    for route, count in RECOVERED.items():
        paths += [(route.format(key=f"k{i}"), "recovered") for i in range(count)]
    paths += [("/gray", "gray")] * GRAY
    paths += [(f"/img/{names[i % len(names)]}", "healthy") for i in range(ROWS - len(paths))]
    assert sum(count for count, _ in FAULTS.values()) == ROWS // 10 and len(paths) == ROWS
    # Spread the kinds over the uids (a fixed shuffle) and make each URL unique with a query string.
    order = sorted(range(ROWS), key=lambda i: (i * 7919) % ROWS)
    return {uid: (server.url(f"{paths[i][0]}?uid={uid}"), paths[i][1]) for uid, i in enumerate(order)}


def test_thousand_url_loopback_run_with_ten_percent_faults(server, tiny_vit, tmp_path):
    rows = build_rows(server)
    dataset = tmp_path / "items.parquet"
    pq.write_table(pa.table({"uid": pa.array(list(rows), pa.int64()), "URL": [url for url, _ in rows.values()]}),
                   dataset)
    out = tmp_path / "predictions.parquet"

    start = time.perf_counter()
    result = CliRunner().invoke(main, ["predict", str(dataset), "--model", f"hf:{tiny_vit}", "--device", "cpu",
                                       "--allow-private-network", "--batch-size", "64",
                                       "--no-progress", "-o", str(out)])
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output + repr(result.exception)

    table = pq.read_table(out)
    assert table.column("model").unique().to_pylist() == [tiny_vit.name]
    got = {row["uid"]: row for row in table.to_pylist()}
    assert table.num_rows == ROWS and sorted(got) == list(range(ROWS))  # each uid once
    assert all(row["status"] for row in got.values())  # every row has a status

    wnids = set(class_list("imagenet-1k"))
    wrong = {}
    for uid, (url, kind) in rows.items():
        row = got[uid]
        if kind in ("healthy", "gray", "recovered"):
            top5 = row["top5"]
            if not (row["status"] == "ok" and row["error"] is None and top5 and len(top5) == 5
                    and len(set(top5)) == 5 and set(top5) <= wnids):
                wrong[url] = (kind, row["status"], row["error"], top5)
        elif not (row["status"] == kind and row["top5"] is None and row["error"]):
            wrong[url] = (kind, row["status"], row["error"], row["top5"])
    assert not wrong, f"{len(wrong)} rows not as expected, e.g. {list(wrong.items())[:5]}"

    counts = Counter(row["status"] for row in got.values())
    assert counts["ok"] == ROWS - ROWS // 10
    assert server.count("/slow") == FAULTS["/slow"][0]  # timeouts are not retried
    assert all(got[uid]["error"].startswith("read timeout after") for uid, (_, kind) in rows.items()
               if kind == "timeout")
    # The run never waits past its timeouts. Every item ends by its 30 s deadline, here the slowest (`/slow`)
    # at the 10 s read timeout while the other 997 rows go on beside it: the run takes the 900 images' work
    # (~15 s on 2 slow cores) and little more. A run that waited on the slow server would take its 30 s sleep
    # at least (and end those rows too_small, not timeout). The bound is one deadline per chunk (a chunk waits
    # for its slowest row before the next starts) plus as much again for the work, on a busy machine.
    chunks = 1  # the default --chunk-rows (10,000) holds all 1,000 rows
    assert seconds < (chunks + 1) * DEFAULTS.total_timeout, f"run took {seconds:.1f} s"
    assert f"{ROWS - ROWS // 10:,} ok" in result.output
