"""The ``pipeline`` command: build stores (AudioSet, VGGSound, any manifest), stats,
benchmarks (``bench``: the pipeline's CPU cost; ``bench-loader``: the training loader,
``store.bench``), and the store's ``info`` / ``verify``.

Each command imports what it needs inside its handler: `pipeline info` and `verify` read
metadata and never import torch (tests/test_pipeline_startup.py checks it)."""

from __future__ import annotations

import argparse
import atexit
import gc
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.engines import ENGINES

if TYPE_CHECKING:
    import pyarrow as pa

    from pipeline.manifest import ManifestBuilder
    from pipeline.run import BuildOptions

BUILDS = ("build", "build-audioset", "build-vggsound", "build-esc50", "build-speechcommands")


def _add_source_args(p: argparse.ArgumentParser, youtube: bool) -> None:
    from pipeline.sources import DEFAULT_PATTERNS, SourceConfig

    g = p.add_argument_group("media source")
    g.add_argument("--media-root", help="folder of local media files named by clip "
                   "(patterns: --media-pattern; any extension)")
    g.add_argument("--media-pattern", action="append", default=None,
                   help=f"file stem pattern, repeatable (default {list(DEFAULT_PATTERNS)})")
    g.add_argument("--url-template", help="download URL per clip, e.g. "
                   "https://host/{ytid}_{start}.mp4 (fields: ytid clip_id start end start_ms "
                   "start3 end3 start06)")
    if youtube:
        g.add_argument("--source", choices=["youtube"], help="download segments with yt-dlp")
        g.add_argument("--youtube-url-template", default=SourceConfig.youtube_url_template)


ENGINE_HELP = ("auto (default): the Ray cluster --address or $RAY_ADDRESS names (a Dask "
               "one for tcp://), else local processes; ray: also an embedded local Ray "
               "when no address; dask; local")


def _add_common_args(p: argparse.ArgumentParser) -> None:
    from pipeline.features import JPEG_ENCODERS
    from pipeline.sources import SourceConfig

    p.add_argument("--out", required=True, help="store path (local dir or fsspec URL)")
    p.add_argument("--engine", choices=ENGINES, default="auto", help=ENGINE_HELP)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--address", help="existing Ray (ray://, auto, HOST:PORT) or Dask "
                   "(tcp://) cluster")
    p.add_argument("--format", choices=["zarr", "hdf5"], default="zarr")
    p.add_argument("--shard-size", type=int, default=None, help="clips per shard, fixed when "
                   "the store is created (default 1000, fewer for a small manifest: >= 4 "
                   "shards per worker)")
    p.add_argument("--limit", type=int, default=None, help="first N accepted clips only")
    p.add_argument("--retry-failed", action="store_true",
                   help="re-process only failed clips of committed shards")
    p.add_argument("--max-retries", type=int, default=3, help="task retries (worker death)")
    p.add_argument("--report-dir", help="run report + rejects (default OUT/reports)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--ffmpeg", help="ffmpeg binary (default $MAVIL_FFMPEG or imageio-ffmpeg)")
    p.add_argument("--download-dir", default=None, help="temporary downloads (default tmp)")
    p.add_argument("--timeout", type=float, default=30.0, help="download timeout per "
                   "connect / read, seconds")
    p.add_argument("--deadline", type=float, default=None, help="wall-clock limit on one "
                   "clip's whole download, every try included (default 10 x --timeout)")
    p.add_argument("--allow-cross-host-redirects", action="store_true",
                   help="let http(s) redirects leave the first URL's host (yt-dlp, whose "
                   "CDNs need it, always may)")
    p.add_argument("--max-mb", type=float, default=512.0, help="download size limit, MB")
    p.add_argument("--retries", type=int, default=3, help="download retries with backoff")
    p.add_argument("--downloads-in-flight", type=int, default=SourceConfig.downloads_in_flight,
                   help="clips downloaded ahead of the decoder per worker (0: none)")
    p.add_argument("--max-per-host", type=int, default=SourceConfig.max_per_host,
                   help="downloads at once per host per worker (0: no limit)")
    p.add_argument("--host-rate", type=float, default=None,
                   help="request starts per second per host per worker (default no limit)")
    p.add_argument("--jpeg-quality", type=int, default=None)
    p.add_argument("--jpeg-encoder", choices=JPEG_ENCODERS, default="pil",
                   help="pil/torchvision encode raw frames; ffmpeg emits MJPEG directly")
    p.add_argument("--store-waveform", action="store_true")
    p.add_argument("--target-frames", type=int, default=None,
                   help="fbank frames stored per clip (store.json fbank.target_frames; default "
                   "1024 = 10 s, build-esc50 512, build-speechcommands 128)")


def build_parser() -> argparse.ArgumentParser:
    from pipeline.sources import SourceConfig

    parser = argparse.ArgumentParser(prog="pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build-audioset", help="AudioSet segment CSVs -> store")
    p.add_argument("--segments", nargs="+", required=True, help="segment CSV(s)")
    p.add_argument("--labels", required=True, help="class_labels_indices.csv")
    p.add_argument("--splits", nargs="+", help="split per CSV (default from file name)")
    _add_source_args(p, youtube=True)
    _add_common_args(p)
    p.set_defaults(func=cmd_build_audioset)

    p = sub.add_parser("build-vggsound", help="vggsound.csv -> store")
    p.add_argument("--csv", required=True, help="vggsound.csv (no header)")
    _add_source_args(p, youtube=True)
    _add_common_args(p)
    p.set_defaults(func=cmd_build_vggsound)

    p = sub.add_parser("build", help="generic manifest (CSV/Parquet: id,uri,start,end,"
                       "labels,split) -> store")
    p.add_argument("--manifest", required=True)
    p.add_argument("--labels", help="vocabulary CSV index,mid,display_name (default: names "
                   "found in the manifest)")
    p.add_argument("--name", default="custom", help="vocabulary name in store.json")
    _add_source_args(p, youtube=False)
    _add_common_args(p)
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("build-esc50", help="ESC-50-master (meta/esc50.csv, audio/) -> store; "
                       "split = fold1..fold5, 512 frames (pipeline/esc50.py)")
    p.add_argument("--root", required=True, help="the ESC-50-master folder")
    _add_common_args(p)
    p.set_defaults(func=cmd_build_esc50)

    p = sub.add_parser("build-speechcommands", help="Speech Commands v0.01 / v0.02 folder -> "
                       "store; splits from the list files, 128 frames (pipeline/speechcommands.py)")
    p.add_argument("--root", required=True, help="unpacked speech_commands_v0.0x folder")
    p.add_argument("--task", choices=("35", "12"), default="35",
                   help="35 words (v0.02, AST) or 12 classes (v0.01, SUPERB / SPC-1)")
    p.add_argument("--test-root", help="12-class task: speech_commands_test_set_v0.01 folder "
                   "(SUPERB's test set; default: testing_list.txt)")
    _add_common_args(p)
    p.set_defaults(func=cmd_build_speechcommands)

    p = sub.add_parser("make-synthetic", help="generate the labelled ffmpeg-made set: "
                       "OUT/media, OUT/manifest.csv, OUT/labels.csv (pipeline/synthetic.py)")
    p.add_argument("--out", required=True, help="output folder (new or a resumed set)")
    p.add_argument("--clips", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--duration-range", type=float, nargs=2, default=(4.0, 10.0),
                   metavar=("MIN", "MAX"), help="clip length in seconds (4 10)")
    p.add_argument("--eval-fraction", type=float, default=0.2)
    p.add_argument("--jobs", type=int, default=2, help="ffmpeg processes at once")
    p.add_argument("--ffmpeg")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_make_synthetic)

    p = sub.add_parser("stats", help="fbank mean/std of the train split -> store.json")
    p.add_argument("store")
    p.add_argument("--split", default="train", help="split to measure ('all' for every clip)")
    p.add_argument("--engine", choices=ENGINES, default="auto", help=ENGINE_HELP)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--address")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("bench", help="CPU s/clip: full path vs ffmpeg decode-only floor")
    p.add_argument("--media", nargs="*", default=[], help="extra media files or folders")
    p.add_argument("--repeat", type=int, default=2, help="passes over the media")
    p.add_argument("--scaling-clips", type=int, default=24, help="clips for 1 vs 2 workers")
    p.add_argument("--no-scaling", action="store_true")
    p.add_argument("--latency", type=float, default=None, metavar="SECONDS",
                   help="instead: clips/s of one worker downloading from a 127.0.0.1 server "
                   "that delays each request, prefetch off vs on, against zero latency")
    p.add_argument("--latency-clips", type=int, default=96,
                   help="clips per --latency run (one shard: its fill costs one latency)")
    p.add_argument("--rounds", type=int, default=2, help="--latency: best of N rounds")
    p.add_argument("--downloads-in-flight", type=int, default=SourceConfig.downloads_in_flight,
                   help="prefetch depth of the --latency 'on' runs")
    p.add_argument("--json", help="also write the figures here")
    p.add_argument("--ffmpeg")
    g = p.add_argument_group("start-up (pipeline/bench_startup.py)")
    g.add_argument("--startup", action="store_true", help="instead: wall time of a 7-clip "
                   "build vs its own work, and of `pipeline info`, fresh interpreters")
    g.add_argument("--workers", type=int, default=2, help="--startup build workers")
    g.add_argument("--engine", dest="startup_engine", choices=ENGINES, default="auto",
                   help="--startup build engine")
    g.add_argument("--limit", type=int, default=None, help="--startup: first N clips")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("bench-loader", help="loader samples/s per worker (MAViL pre-training "
                       "view) vs the official repos' way of reading (store.bench)")
    p.add_argument("--store", help="store path or URL (default: build one from the media)")
    p.add_argument("--media", type=Path, default=None, help="shared media dir")
    p.add_argument("--samples", type=int, default=100, help="samples per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 = one worker)")
    p.add_argument("--decode", choices=("cpu", "gpu"), default="cpu",
                   help="gpu: time the loader side of the nvJPEG path (bytes + crop plan)")
    p.add_argument("--workers", type=int, default=2,
                   help="DataLoader workers for the loader-level figure (0: skip it)")
    p.add_argument("--batch-size", type=int, default=4, help="DataLoader batch size")
    p.set_defaults(func=cmd_bench_loader)

    try:
        from store import cli as store_cli

        store_cli.add_commands(sub)
    except ImportError:  # store without its CLI: the build commands still work
        pass
    return parser


def _options(args: argparse.Namespace) -> BuildOptions:
    from pipeline.decode import DecodeOptions
    from pipeline.run import BuildOptions
    from pipeline.sources import SourceConfig

    source = SourceConfig(
        media_root=getattr(args, "media_root", None),
        url_template=getattr(args, "url_template", None),
        youtube=getattr(args, "source", None) == "youtube",
        youtube_url_template=getattr(args, "youtube_url_template",
                                     SourceConfig.youtube_url_template),
        download_dir=args.download_dir or os.path.join(tempfile.gettempdir(), "mavil-dl"),
        timeout=args.timeout, max_bytes=int(args.max_mb * 1024 * 1024), retries=args.retries,
        deadline=args.deadline, cross_host_redirects=args.allow_cross_host_redirects,
        ffmpeg=args.ffmpeg, downloads_in_flight=max(0, args.downloads_in_flight),
        max_per_host=max(0, args.max_per_host), host_rate=args.host_rate)
    if getattr(args, "media_pattern", None):
        source.patterns = tuple(args.media_pattern)
    decode = DecodeOptions(ffmpeg=args.ffmpeg,
                           video_output="mjpeg" if args.jpeg_encoder == "ffmpeg" else "rgb")
    return BuildOptions(out=args.out, engine=args.engine, workers=max(1, args.workers),
                        address=args.address, backend=args.format, shard_size=args.shard_size,
                        jpeg_quality=args.jpeg_quality, store_waveform=args.store_waveform,
                        retry_failed=args.retry_failed, max_retries=args.max_retries,
                        report_dir=args.report_dir, progress=not args.no_progress,
                        jpeg_encoder=args.jpeg_encoder, target_frames=args.target_frames,
                        clip_seconds=getattr(args, "clip_seconds", None), source=source,
                        decode=decode)


def _finish(builder: ManifestBuilder, vocabulary: pa.Table, args: argparse.Namespace,
            name: str) -> int:
    from pipeline.run import build, format_summary

    has_source = (getattr(args, "media_root", None) or getattr(args, "url_template", None)
                  or getattr(args, "source", None))
    if args.command in YOUTUBE_BUILDS and not has_source:  # YouTube ids need a media source
        print("error: give --media-root, --url-template or --source youtube", file=sys.stderr)
        return 2
    builder.limit(args.limit)
    report = build(builder.specs, builder.rejects, vocabulary, _options(args), name)
    print(format_summary(report))
    return 0


YOUTUBE_BUILDS = ("build-audioset", "build-vggsound")  # manifests of YouTube ids


def cmd_build_esc50(args: argparse.Namespace) -> int:
    from pipeline import esc50
    from pipeline.manifest import ManifestBuilder

    builder = esc50.read_esc50(args.root, ManifestBuilder())
    args.target_frames = args.target_frames or esc50.TARGET_FRAMES
    args.clip_seconds = esc50.CLIP_SECONDS
    return _finish(builder, esc50.esc50_vocabulary(), args, "esc50")


def cmd_build_speechcommands(args: argparse.Namespace) -> int:
    from pipeline import speechcommands as sc
    from pipeline.manifest import ManifestBuilder

    builder = sc.read_speechcommands(args.root, ManifestBuilder(), args.task, args.test_root)
    args.target_frames = args.target_frames or sc.TARGET_FRAMES
    args.clip_seconds = sc.CLIP_SECONDS
    return _finish(builder, sc.speechcommands_vocabulary(args.task), args,
                   f"speechcommands{args.task}")


def cmd_build_audioset(args: argparse.Namespace) -> int:
    from pipeline.audioset import read_class_labels, read_segments
    from pipeline.manifest import ManifestBuilder

    vocabulary = read_class_labels(args.labels)
    builder = read_segments(args.segments, vocabulary, ManifestBuilder(), args.splits)
    return _finish(builder, vocabulary, args, "audioset")


def cmd_build_vggsound(args: argparse.Namespace) -> int:
    from pipeline.manifest import ManifestBuilder
    from pipeline.vggsound import read_vggsound, vggsound_vocabulary

    vocabulary = vggsound_vocabulary(args.csv)
    builder = read_vggsound(args.csv, vocabulary, ManifestBuilder())
    return _finish(builder, vocabulary, args, "vggsound")


def cmd_build(args: argparse.Namespace) -> int:
    from pipeline.audioset import read_class_labels
    from pipeline.generic_manifest import generic_vocabulary, read_generic
    from pipeline.manifest import ManifestBuilder

    vocabulary = read_class_labels(args.labels) if args.labels else generic_vocabulary(
        args.manifest)
    builder = read_generic(args.manifest, vocabulary, ManifestBuilder())
    return _finish(builder, vocabulary, args, args.name)


def cmd_make_synthetic(args: argparse.Namespace) -> int:
    from pipeline.synthetic import make_synthetic

    summary = make_synthetic(args.out, args.clips, args.seed, tuple(args.duration_range),
                             args.eval_fraction, args.jobs, args.ffmpeg, not args.no_progress)
    print(f"{summary['clips']} clips ({summary['train']} train / {summary['eval']} eval, "
          f"{summary['written']} written in {summary['seconds']} s) -> {summary['out']}; "
          f"chance eval mAP {summary['chance_mAP_eval']}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from pipeline.stats import compute_stats

    split = None if args.split == "all" else args.split
    stats = compute_stats(args.store, split, args.engine, max(1, args.workers), args.address)
    print(json.dumps(stats, indent=1))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.startup:
        from pipeline.bench_startup import run_bench_startup

        return run_bench_startup(args)
    from pipeline.bench import run_bench

    return run_bench(args)


def cmd_bench_loader(args: argparse.Namespace) -> int:
    from store.bench import run_bench

    run_bench(args.store, args.media, max(1, args.samples), max(1, args.rounds),
              max(1, args.threads), decode=args.decode, workers=max(0, args.workers),
              batch_size=max(1, args.batch_size))
    return 0


# Local paths the workers receive. Made absolute here: a Ray or Dask worker does not
# share the driver's working directory (Ray runs tasks in its own working_dir copy).
_PATH_ARGS = ("out", "store", "manifest", "media_root", "labels", "csv", "segments",
              "report_dir", "download_dir", "media", "root", "test_root")


def absolute_paths(args: argparse.Namespace) -> argparse.Namespace:
    """Local path arguments -> absolute paths; URLs (``scheme://``) are left alone."""
    def fix(value: str) -> str:
        return value if "://" in value else os.path.abspath(value)

    for name in _PATH_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, str):
            setattr(args, name, fix(value))
        elif isinstance(value, list):
            setattr(args, name, [fix(v) if isinstance(v, str) else v for v in value])
    return args


def start_engine_early(argv: Sequence[str]) -> None:
    """A build that will run on local processes starts their forkserver before the rest
    of the command is imported: the forkserver's imports (~0.3 s) then overlap
    the driver's own, its manifest reading and the store's creation."""
    if not argv or argv[0] not in BUILDS or {"-h", "--help"} & set(argv):
        return
    from pipeline.engines import choose_engine as choose
    from pipeline.engines import start_local_engine

    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    pre.add_argument("--engine", default="auto")
    pre.add_argument("--address")
    pre.add_argument("--format", default="zarr")
    try:
        known, _ = pre.parse_known_args(argv[1:])
    except (argparse.ArgumentError, SystemExit):  # --engine without a value: the full
        # parser says so
        return
    if known.engine in ENGINES and choose(known.engine, known.address)[0] == "local":
        start_local_engine(known.format)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # the command itself, not a call from Python code
        # Its exit ends with a collection that walks every object still alive (30-60 ms
        # here, 0.3-0.7 s once torch is loaded, 2-core dev box). Frozen objects are skipped,
        # so freezing them at exit saves that wait; nothing is lost (files are closed, and
        # stores commit by rename, never in a finaliser).
        atexit.register(gc.freeze)
    argv = sys.argv[1:] if argv is None else list(argv)
    start_engine_early(argv)
    from store import StoreError
    from store.arrow_without_pandas import skip_pyarrow_pandas_probe

    skip_pyarrow_pandas_probe()  # 1-4 s that no command here needs
    args = absolute_paths(build_parser().parse_args(argv))
    try:
        return int(args.func(args) or 0)
    except (OSError, ValueError, StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ImportError as err:
        print(f"error: {err} (install the extra, e.g. pip install 'mavil-store[ray]', "
              "or use --engine local)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
