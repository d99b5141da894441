"""Loader over S3 vs local disk: MAViL pre-training samples/s, ratio measured in one run.

    uv run python -m store.bench_s3 [--latency-ms 5] [--epochs 6] [--workers 2]

Builds the small sample store from the shared media on local disk, starts moto's S3
server in a separate process on 127.0.0.1 with a per-request latency added on the server
side (a WSGI middleware sleeps before answering each HTTP request, so every round trip
the client makes really waits), uploads the store, and runs the same StreamingDataset +
"mavil_pretrain" view in a DataLoader (persistent workers, as in training) over both,
epochs interleaved (local, s3, local, s3, ...). The first epoch of each is warm-up
(workers open their shards); prints the best epoch's samples/s of each, the ratio
(target >= 0.8 at 5 ms) and the server's requests per sample.
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


def serve(latency_s: float) -> None:
    """Run moto's S3 app on a free port with ``latency_s`` added to every request; prints
    the port, then serves until killed. GET /__requests answers the request count."""
    import logging

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


def _epoch_rate(loader: Any) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = sum(len(b["index"]) for b in loader)
    return n / (time.perf_counter() - t0), n


def run(latency_ms: float, epochs: int, workers: int, batch: int, backend: str) -> dict:
    import fsspec
    import torch
    from torch.utils.data import DataLoader

    from store.datasets import StreamingDataset
    from store.jpeg import collate
    from store.sample_store import SAMPLE_PLAN, build_sample_store, default_media_dir
    from store.views import make_view

    torch.set_num_threads(1)
    env = dict(os.environ, **CREDS)
    proc = subprocess.Popen([sys.executable, "-m", "store.bench_s3", "--serve",
                             str(latency_ms / 1000)], stdout=subprocess.PIPE, env=env,
                            text=True)
    try:
        port = int(proc.stdout.readline())
        endpoint = f"http://127.0.0.1:{port}"
        os.environ.update(CREDS)
        fsspec.config.conf["s3"] = {"endpoint_url": endpoint}
        with tempfile.TemporaryDirectory() as tmp:
            local = build_sample_store(f"{tmp}/store", default_media_dir(), backend,
                                       SAMPLE_PLAN * 2, shards=4)
            fs = fsspec.filesystem("s3")
            fs.mkdir("bench")
            fs.put(local, "bench/store", recursive=True)
            url = "s3://bench/store"
            loaders = {}
            for name, where in (("local", local), ("s3", url)):
                ds = StreamingDataset(where, make_view("mavil_pretrain"), batch_size=batch)
                loaders[name] = DataLoader(ds, batch_size=batch, num_workers=workers,
                                           collate_fn=collate, persistent_workers=True)
            best = {"local": 0.0, "s3": 0.0}
            reqs, samples = 0, 0
            for epoch in range(epochs + 1):
                for name, loader in loaders.items():
                    before = _requests(endpoint)
                    rate, n = _epoch_rate(loader)
                    if epoch > 0:
                        best[name] = max(best[name], rate)
                        if name == "s3":
                            reqs += _requests(endpoint) - before
                            samples += n
            return {"latency_ms": latency_ms, "backend": backend, "workers": workers,
                    "clips": len(loaders["local"].dataset), "local": best["local"],
                    "s3": best["s3"], "ratio": best["s3"] / best["local"],
                    "requests_per_sample": reqs / max(samples, 1)}
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
    p.add_argument("--serve", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    r = run(args.latency_ms, args.epochs, args.workers, args.batch, args.backend)
    print(f"{r['backend']} store, {r['clips']} clips, {r['workers']} DataLoader workers, "
          f"{r['latency_ms']:g} ms per S3 request (best of {args.epochs} epochs)")
    print(f"  local disk  {r['local']:8.1f} samples/s")
    print(f"  s3 (moto)   {r['s3']:8.1f} samples/s   ratio {r['ratio']:.2f} (target >= 0.8)"
          f"   {r['requests_per_sample']:.2f} requests per sample")


if __name__ == "__main__":
    main()
