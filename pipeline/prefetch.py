"""Downloads running ahead of the decoder: clip k+1 .. k+D are fetched while clip k decodes.

``prefetched`` yields every clip with its fetch result in the order given, whichever
download finishes first; ``depth`` threads fetch (``SourceConfig.downloads_in_flight``),
so at most ``depth`` downloads are open and at most ``depth`` fetched files wait for the
decoder (plus the one it holds). The decode stays in the calling thread. Per-host limits
and backoff are the downloads' own (pipeline/hosts.py through ``with_retries``).

The consumer cleans up each file it is given (``Fetched.cleanup``); the ones it was never
given -- the consumer failed, or stopped early -- are cleaned up when the iterator is
closed (``contextlib.closing``), after the downloads still running have ended (each within
its deadline). A killed process leaves its files in its workspace, which the next run's
``pipeline.workspace.sweep`` removes. ``depth`` 0 fetches each clip when the consumer asks
for it, in the consumer's thread: no threads, no lookahead (the behaviour before prefetch).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from pipeline.manifest import ClipSpec
from pipeline.sources import Fetched, FetchError, SourceConfig, fetch

Result = Fetched | FetchError


def fetch_result(clip: ClipSpec, cfg: SourceConfig) -> Result:
    """``fetch`` with its FetchError returned, not raised."""
    try:
        return fetch(clip, cfg)
    except FetchError as err:
        return err


def prefetched(clips: Iterable[ClipSpec], cfg: SourceConfig, depth: int | None = None
               ) -> Iterator[tuple[ClipSpec, Result]]:
    """``(clip, fetch result)`` for every clip in order, ``depth`` fetched ahead (default
    ``cfg.downloads_in_flight``). Close the iterator when stopping early."""
    depth = cfg.downloads_in_flight if depth is None else depth
    if depth <= 0:
        for clip in clips:
            yield clip, fetch_result(clip, cfg)
        return
    todo = iter(clips)
    pending: deque[tuple[ClipSpec, Future[Result]]] = deque()
    pool = ThreadPoolExecutor(depth, thread_name_prefix="prefetch")

    def top_up() -> None:
        while len(pending) < depth:
            clip = next(todo, None)
            if clip is None:
                return
            pending.append((clip, pool.submit(fetch_result, clip, cfg)))

    try:
        top_up()
        while pending:
            clip, future = pending.popleft()
            top_up()  # the next `depth` clips download while this one is consumed
            yield clip, future.result()
    finally:
        for _, future in pending:
            future.cancel()
        pool.shutdown(wait=True)
        for _, future in pending:
            if not future.cancelled() and future.exception() is None:
                got = future.result()
                if isinstance(got, Fetched):
                    got.cleanup()
