"""Which ffmpeg binary to run: ``--ffmpeg`` > ``$MAVIL_FFMPEG`` > imageio-ffmpeg's bundled one."""

from __future__ import annotations

import os
import shutil
from functools import lru_cache

ENV_VAR = "MAVIL_FFMPEG"


@lru_cache(maxsize=8)
def ffmpeg_exe(user: str | None = None) -> str:
    """Absolute path of the ffmpeg binary to use (raises FileNotFoundError)."""
    choice = user or os.environ.get(ENV_VAR)
    if choice:
        found = shutil.which(choice) or (choice if os.path.isfile(choice) else None)
        if not found:
            raise FileNotFoundError(f"ffmpeg binary not found: {choice!r}")
        return os.path.abspath(found)
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()
