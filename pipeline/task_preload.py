"""What a local-engine task process has loaded before it starts: imported once by the
forkserver (pipeline/engines.py ``TASK_PRELOAD``), inherited by every task it forks.

Without it each shard task paid its own lazy imports (zarr, h5py, PIL's plugins,
imageio-ffmpeg) plus pyarrow's pandas probe: ~2.3 s per task on the 2-core dev box, more
than a small shard's work (`pipeline bench --startup` prints the ratio). A task needs no
torch (store.fbank is NumPy): ``import torch`` alone would cost 1.5-2 s here and take a
task process from 125 to 659 MB resident. BLAS is kept to one thread per task process (one
process per worker core), as ``torch.set_num_threads(1)`` did for the torch fbank."""

from __future__ import annotations

import gc
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy loads its BLAS

gc.disable()  # no collections while the imports below build their ~10^5 objects (-13 %)
try:
    from store.arrow_without_pandas import skip_pyarrow_pandas_probe

    skip_pyarrow_pandas_probe()

    import importlib.resources.readers  # noqa: F401  (imageio_ffmpeg's lookup)

    import imageio_ffmpeg.binaries  # noqa: F401  (pipeline.ffmpeg_bin's default binary)
    import zarr  # noqa: F401
    from PIL import Image  # pipeline.features' JPEG encoder

    import pipeline.shard_task  # noqa: F401
    import pipeline.stats  # noqa: F401
    import store.backends.hdf5_backend  # noqa: F401  (h5py itself: engines.HDF5_PRELOAD)
    import store.backends.zarr_backend  # noqa: F401
    import store.fbank  # noqa: F401

    Image.preinit()  # its JPEG/PNG/... plugins, imported on the first save otherwise
finally:  # (the forkserver ignores an ImportError here: its tasks must still collect)
    # Everything imported so far lives as long as the process: move it out of the
    # collector's reach. A forked task's collections then skip it (and leave those pages
    # shared with the forkserver instead of copying them), and the forkserver's own exit at
    # the end of a build takes ~25 ms instead of ~100 ms (its final collection walked all
    # ~10^5 objects).
    gc.freeze()
    gc.enable()
