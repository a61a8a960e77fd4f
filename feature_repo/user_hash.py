"""A user's hash: where the user's rows live in the event lake, and which batch shard is theirs.

    user_hash(user_id) = first 8 bytes of SHA-256(user_id as UTF-8), big-endian, shifted right
                         by one bit: an integer in [0, 2**63), an int64 in every file

SHA-256, not Python's `hash()` (salted per process) or a library's hash (free to change with
its version): every process, machine and release gives a user the same value. One bit is
dropped so that the value is a signed 64-bit integer, which Parquet's statistics, Arrow and
NumPy order alike.

The event lake stores it beside each user's events and sorts its files by it, and the batch
side's shards are contiguous ranges of it (flows/shards.py), so a shard's reader skips every
file and row group whose minimum and maximum lie outside its range.
"""

import hashlib
from collections.abc import Iterable
from functools import lru_cache

import numpy as np

USER_HASH = "user_hash"
HASH_BITS = 63
# Users whose hash is in [first, last], both ends included.
HashRange = tuple[int, int]


# Readers and writers hash the same few users over and over: each process hashes an id once
# (2**18 ids, ~40 MB at most).
@lru_cache(maxsize=1 << 18)
def user_hash(user_id: str) -> int:
    return int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big") >> 1


def user_hashes(user_ids: Iterable[str]) -> np.ndarray:
    """`user_hash` of each id, as int64."""
    ids = list(user_ids)
    return np.fromiter((user_hash(u) for u in ids), dtype=np.int64, count=len(ids))
