"""Loader over S3 vs local disk: MAViL pre-training samples/s, ratio measured in one run.

    uv run python -m store.bench_s3 [--latency-ms 5] [--epochs 6] [--workers 2]
                                    [--copies 8] [--server-nice 0]

Builds the small sample store from the shared media on local disk, starts moto's S3
server in a separate process on 127.0.0.1 with a per-request latency added on the server
side (a WSGI middleware sleeps before answering each HTTP request, so every round trip
the client makes really waits), uploads the store, and runs the same StreamingDataset +
"mavil_pretrain" view in a DataLoader (persistent workers, as in training) over both,
epochs interleaved (local, s3, local, s3, ...). The first epoch of each is warm-up
(workers open their shards); prints the best epoch's samples/s of each, the ratio
(target >= 0.8 at 5 ms), the server's requests per sample, and where the CPU goes: the
client's (main process + DataLoader workers) per sample on each side, and the server's
per sample. moto's server is Python too and shares the machine's cores with the workers
(~5 ms of CPU per request, whatever its size), so on a small box part of the gap is the
server's; ``--server-nice 19`` runs it at the lowest priority, nearer a remote server.
The CPU-bound ratios (local CPU per sample over S3's) are what a box whose cores are all
busy gets, and hold when other jobs share the machine (the wall-clock ratio then varies
with their load). ``--copies``: the sample plan's repeats (12 clips each); an epoch of
a few batches per worker would mostly time each epoch's first, un-overlapped read.
Needs the dev dependencies (moto[server], s3fs).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

CREDS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
         "AWS_DEFAULT_REGION": "us-east-1"}


def serve(latency_s: float, nice: int = 0) -> None:
    """Run moto's S3 app on a free port with ``latency_s`` added to every request; prints
    the port, then serves until killed. GET /__requests answers the request count."""
    import logging

    os.nice(nice)

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = DomainDispatcherApplication(create_backend_app)
    count = [0]

    def delayed(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO") == "/__requests":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [str(count[0]).encode()]
        count[0] += 1
        time.sleep(latency_s)  # the server is slow to answer: a real round-trip cost
        return app(environ, start_response)

    server = make_server("127.0.0.1", 0, delayed, threaded=True,
                         request_handler=MotoRequestHandler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def _requests(endpoint: str) -> int:
    from urllib.request import urlopen

    with urlopen(f"{endpoint}/__requests", timeout=10) as r:  # our own server, 127.0.0.1
        return int(r.read())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _client_cpu(server_pid: int) -> float:
    """CPU of this process and its children (the DataLoader workers), not the server."""
    me = os.getpid()
    total = cpu_seconds(me)
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) not in (me, server_pid):
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == me:
                        total += cpu_seconds(int(entry))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue
    return total


def _epoch(loader: Any, server_pid: int) -> tuple[float, int, float, float]:
    """(samples/s, samples, client CPU s, server CPU s) of one epoch."""
    c0, s0, t0 = _client_cpu(server_pid), cpu_seconds(server_pid), time.perf_counter()
    n = sum(len(b["index"]) for b in loader)
    t1 = time.perf_counter()
    return (n / (t1 - t0), n, _client_cpu(server_pid) - c0,
            cpu_seconds(server_pid) - s0)


def run(latency_ms: float, epochs: int, workers: int, batch: int, backend: str,
        copies: int = 8, server_nice: int = 0) -> dict:
    import fsspec
    import torch

    from store.batch_ring import RingLoader
    from store.datasets import StreamingDataset
    from store.sample_store import SAMPLE_PLAN, build_sample_store, default_media_dir
    from store.views import make_view

    torch.set_num_threads(1)
    env = dict(os.environ, **CREDS)
    proc = subprocess.Popen([sys.executable, "-m", "store.bench_s3", "--serve",
                             str(latency_ms / 1000), "--server-nice", str(server_nice)],
                            stdout=subprocess.PIPE, env=env, text=True)
    try:
        port = int(proc.stdout.readline())
        endpoint = f"http://127.0.0.1:{port}"
        os.environ.update(CREDS)
        fsspec.config.conf["s3"] = {"endpoint_url": endpoint}
        with tempfile.TemporaryDirectory() as tmp:
            local = build_sample_store(f"{tmp}/store", default_media_dir(), backend,
                                       SAMPLE_PLAN * copies, shards=4 * copies // 2)
            fs = fsspec.filesystem("s3")
            fs.mkdir("bench")
            fs.put(local, "bench/store", recursive=True)
            url = "s3://bench/store"
            loaders = {}
            for name, where in (("local", local), ("s3", url)):
                ds = StreamingDataset(where, make_view("mavil_pretrain"), batch_size=batch)
                # the trainer's loader (batch ring), kept alive across epochs
                loaders[name] = RingLoader(ds, batch_size=batch, num_workers=workers,
                                           persistent_workers=True)
            best = {"local": 0.0, "s3": 0.0}
            totals = {k: 0.0 for k in ("requests", "samples", "local_cpu", "local_n",
                                       "s3_cpu", "server_cpu")}
            for epoch in range(epochs + 1):
                for name, loader in loaders.items():
                    before = _requests(endpoint)
                    rate, n, client, server = _epoch(loader, proc.pid)
                    if epoch == 0:
                        continue
                    best[name] = max(best[name], rate)
                    if name == "s3":
                        totals["requests"] += _requests(endpoint) - before
                        totals["samples"] += n
                        totals["s3_cpu"] += client
                        totals["server_cpu"] += server
                    else:
                        totals["local_cpu"] += client
                        totals["local_n"] += n
            n_s3, n_local = max(totals["samples"], 1), max(totals["local_n"], 1)
            return {"latency_ms": latency_ms, "backend": backend, "workers": workers,
                    "clips": len(loaders["local"].dataset), "local": best["local"],
                    "s3": best["s3"], "ratio": best["s3"] / best["local"],
                    "requests_per_sample": totals["requests"] / n_s3,
                    "client_ms_local": 1000 * totals["local_cpu"] / n_local,
                    "client_ms_s3": 1000 * totals["s3_cpu"] / n_s3,
                    "server_ms": 1000 * totals["server_cpu"] / n_s3,
                    "server_nice": server_nice}
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--latency-ms", type=float, default=5.0, help="added per S3 request")
    p.add_argument("--epochs", type=int, default=6, help="timed epochs after one warm-up")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--backend", choices=("zarr", "hdf5"), default="zarr")
    p.add_argument("--copies", type=int, default=8,
                   help="repeats of the 12-clip sample plan (6 clips per shard)")
    p.add_argument("--server-nice", type=int, default=0,
                   help="os.nice() of the S3 server process (19: lowest priority)")
    p.add_argument("--serve", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve is not None:
        serve(args.serve, args.server_nice)
        return
    r = run(args.latency_ms, args.epochs, args.workers, args.batch, args.backend,
            args.copies, args.server_nice)
    print(f"{r['backend']} store, {r['clips']} clips, {r['workers']} DataLoader workers, "
          f"{r['latency_ms']:g} ms per S3 request (best of {args.epochs} epochs)")
    print(f"  local disk  {r['local']:8.1f} samples/s")
    print(f"  s3 (moto)   {r['s3']:8.1f} samples/s   ratio {r['ratio']:.2f} (target >= 0.8)"
          f"   {r['requests_per_sample']:.2f} requests per sample")
    print(f"  CPU per sample: client {r['client_ms_local']:.1f} ms local, "
          f"{r['client_ms_s3']:.1f} ms s3; S3 server {r['server_ms']:.1f} ms "
          f"(nice {r['server_nice']})")
    # a box whose cores are all busy (other jobs, moto) runs at the rate its CPU allows
    bound = r["client_ms_local"] / (r["client_ms_s3"] + r["server_ms"])
    print(f"  CPU-bound ratio: {bound:.2f} with the server on these cores, "
          f"{r['client_ms_local'] / r['client_ms_s3']:.2f} client only")


if __name__ == "__main__":
    main()
