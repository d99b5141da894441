"""What a local-engine task process has loaded before it starts: imported once by the
forkserver (pipeline/engines.py ``TASK_PRELOAD``), inherited by every task it forks.

Without it each shard task paid its own lazy imports (zarr, h5py, torchaudio's Kaldi
fbank, PIL's plugins, imageio-ffmpeg) plus pyarrow's pandas probe: ~2.3 s per task on the
2-core dev box, more than a small shard's work (`pipeline bench --startup` prints the
ratio). torch itself is imported here too: the workers need it, the driver does not."""

from __future__ import annotations

from store.arrow_without_pandas import skip_pyarrow_pandas_probe

skip_pyarrow_pandas_probe()

import importlib.resources.readers  # noqa: E402,F401  (imageio_ffmpeg's lookup)

import h5py  # noqa: E402,F401  (the lazily imported store backends)
import imageio_ffmpeg.binaries  # noqa: E402,F401  (pipeline.ffmpeg_bin's default binary)
import torch  # noqa: E402,F401
import torchaudio.compliance.kaldi  # noqa: E402,F401  (store.fbank's fbank)
import zarr  # noqa: E402,F401
from PIL import Image  # noqa: E402  (pipeline.features' JPEG encoder)

import pipeline.shard_task  # noqa: E402,F401
import pipeline.stats  # noqa: E402,F401
import store.backends.hdf5_backend  # noqa: E402,F401
import store.backends.zarr_backend  # noqa: E402,F401
import store.fbank  # noqa: E402,F401

Image.preinit()  # its JPEG/PNG/... plugins, imported on the first save otherwise
