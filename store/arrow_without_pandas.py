"""Keep pyarrow from importing pandas in our command-line processes.

The first time pyarrow builds an array (``pa.array``, ``group_by``, ``pq.read_table``) it
imports pandas, only to ask whether the input is a DataFrame or Series: 1.4-3.8 s on the
2-core dev box, more than the rest of `pipeline info` together. Our stores never hold
pandas objects, so a command process can let that first probe find no pandas: pyarrow then
answers "not pandas" for every is-DataFrame / is-Series check without importing it.
Anything that really uses pandas still works afterwards (``to_pandas`` and
``Table.from_pandas`` import it on demand), so this is safe in a process whose own code
never hands pyarrow a pandas object; it is called by the CLI entry points and the local
engine's task processes, never on ``import store``.
"""

from __future__ import annotations

import importlib.abc
import sys


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):  # type: ignore[no-untyped-def]
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError("pandas skipped for pyarrow's probe", name=name)
        return None


def skip_pyarrow_pandas_probe() -> None:
    """Run pyarrow's one-time pandas probe now with pandas hidden (no-op when pandas is
    already imported: then it costs nothing more)."""
    if "pandas" in sys.modules:
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        import pyarrow as pa

        pa.array([0])  # the probe: pyarrow records "no pandas" once
    finally:
        sys.meta_path.remove(finder)
