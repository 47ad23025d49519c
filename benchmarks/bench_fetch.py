"""Benchmark `laionet.fetch.iter_images` against a plain thread-pool downloader, in one run.

Both clients fetch the same URLs from a loopback aiohttp server (in a separate process, so that its CPU
is not counted as theirs) serving the 100 sample ImageNet JPEGs from memory, repeated to --urls URLs
(default 2,000), and both decode every image to RGB with Pillow:

- laionet: `iter_images(items, FetchConfig(concurrency=C, per_host=C, allow_private_network=True))`;
- baseline: `concurrent.futures.ThreadPoolExecutor(C)` mapping `urllib.request.urlopen(url).read()` +
  `Image.open(...).convert("RGB")` over the URLs (what a first attempt usually looks like).

Measured per client, best of --repeat runs (alternating the clients): wall seconds, images/s, and CPU
seconds per image of this process (`time.process_time()`, which `resource.getrusage` user + system
confirms). Every image must come back ok from both clients; exit 1 if not.

Results go to benchmarks/results/fetch-<hostname>.json (fetch-quick-<hostname>.json with --quick).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import resource
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, busy_warning, fmt_rate, fmt_ratio, machine_info, print_table, write_results  # noqa: E402

IMAGES = REPO.parent / "shared" / "data" / "imagenet_samples"


# -- the server (run as `bench_fetch.py --serve`, in its own process) ------------------------------------


def serve() -> None:
    from aiohttp import web

    bodies = [path.read_bytes() for path in sorted(IMAGES.glob("*.JPEG"))]

    async def image(request):
        return web.Response(body=bodies[int(request.match_info["index"]) % len(bodies)], content_type="image/jpeg")

    async def main():
        app = web.Application()
        app.add_routes([web.get("/img/{index}.jpg", image)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0, backlog=1024).start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def start_server() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    port = int(proc.stdout.readline())
    return proc, port


# -- the clients --------------------------------------------------------------------------------------


def run_laionet(urls: list[str], concurrency: int) -> int:
    from laionet.fetch import FetchConfig, iter_images

    config = FetchConfig(concurrency=concurrency, per_host=concurrency, allow_private_network=True)
    ok = 0
    for result in iter_images(enumerate(urls), config):
        ok += result.ok and result.image.mode == "RGB"
    return ok


def _fetch_and_decode(url: str) -> bool:
    from PIL import Image

    with urllib.request.urlopen(url, timeout=10) as response:
        data = response.read()
    return Image.open(io.BytesIO(data)).convert("RGB").mode == "RGB"


def run_baseline(urls: list[str], concurrency: int) -> int:
    with ThreadPoolExecutor(concurrency) as pool:
        return sum(pool.map(_fetch_and_decode, urls))


CLIENTS = {"laionet": run_laionet, "baseline": run_baseline}


def measure(name: str, urls: list[str], concurrency: int) -> dict:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu, wall = time.process_time(), time.perf_counter()
    ok = CLIENTS[name](urls, concurrency)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    after = resource.getrusage(resource.RUSAGE_SELF)
    rusage_cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    if ok != len(urls):
        raise SystemExit(f"{name}: only {ok} of {len(urls)} images came back ok")
    return {"wall_s": round(wall, 3), "images_per_s": round(len(urls) / wall, 1),
            "cpu_s": round(cpu, 3), "cpu_ms_per_image": round(1000 * cpu / len(urls), 3),
            "rusage_cpu_s": round(rusage_cpu, 3), "max_rss_mib": round(after.ru_maxrss / 1024, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200 URLs, one run each (a smoke test)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve()
    if args.quick:
        args.urls, args.repeat = 200, 1
    warning = busy_warning()
    if warning:
        print(warning, file=sys.stderr)

    server, port = start_server()
    try:
        urls = [f"http://127.0.0.1:{port}/img/{i}.jpg" for i in range(args.urls)]
        for name in CLIENTS:  # warm-up: imports, connections, page cache
            CLIENTS[name](urls[:50], args.concurrency)
        runs = {name: [] for name in CLIENTS}
        for _ in range(args.repeat):
            for name in CLIENTS:
                runs[name].append(measure(name, urls, args.concurrency))
    finally:
        server.terminate()
        server.wait()

    best = {name: min(results, key=lambda r: r["wall_s"]) for name, results in runs.items()}
    speedup = best["baseline"]["wall_s"] / best["laionet"]["wall_s"]
    cpu_ratio = best["baseline"]["cpu_ms_per_image"] / best["laionet"]["cpu_ms_per_image"]
    megabytes = sum(p.stat().st_size for p in IMAGES.glob("*.JPEG")) / 100 / 2**20
    print(f"{args.urls:,} loopback URLs ({megabytes:.2f} MiB average JPEG), concurrency {args.concurrency}, "
          f"best of {args.repeat}")
    print_table([(name, f"{r['wall_s']:.2f}", fmt_rate(r["images_per_s"]), f"{r['cpu_ms_per_image']:.2f}",
                  f"{r['rusage_cpu_s']:.2f}") for name, r in best.items()]
                + [("baseline / laionet", fmt_ratio(speedup), "", fmt_ratio(cpu_ratio), "")],
                ("client", "wall s", "images/s", "CPU ms/image", "CPU s (rusage)"))
    path = write_results("fetch-quick" if args.quick else "fetch", {
        "machine": machine_info(), "urls": args.urls, "concurrency": args.concurrency, "repeat": args.repeat,
        "best": best, "runs": runs, "speedup_wall": round(speedup, 3), "cpu_per_image_ratio": round(cpu_ratio, 3),
        "note": "server in a separate process on the same machine; CPU figures are the client process only",
    })
    print(f"-> {path}")


if __name__ == "__main__":
    main()
