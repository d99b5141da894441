"""The feature store: store.json + labels.parquet + a Parquet index + Zarr/HDF5 shards.

See store/FORMAT.md for the on-disk format. This package imports none of ours.
"""

from store.claim import shard_fingerprint
from store.errors import StoreConflict, StoreError
from store.reader import Clip, Store, open_store
from store.records import ClipRecord, clip_checksum
from store.spec import SCHEMA_VERSION, StoreSpec
from store.writer import StoreWriter, create_store, open_writer

__all__ = [
    "SCHEMA_VERSION", "Clip", "ClipRecord", "Store", "StoreConflict", "StoreError",
    "StoreSpec", "StoreWriter", "clip_checksum", "create_store", "open_store", "open_writer",
    "shard_fingerprint",
]
