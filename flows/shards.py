"""User shards: the batch side's scale axis, and where the shards run.

Every batch computation here is independent per user (a profile is rolling windows over one
user's events; a training row joins one user's impression with that user's profile), so the
work splits by user into `count` shards, each computed by the same code as the whole:

    shard_of(user_id, count) = first 8 bytes of SHA-256(user_id as UTF-8), big-endian, mod count

SHA-256, not Python's `hash()` (salted per process) or a library's hash (free to change with
its version): every process, machine and release puts a user in the same shard. Changing the
shard count moves most users, so a run with a new count recomputes in full.

Where the shards run is configuration only (`task_runner`, TIPML_DASK_ADDRESS): unset, in
threads of the flow's own process; `local`, on a Dask cluster of this machine, one
single-threaded worker process per core; `tcp://host:8786`, on an existing Dask cluster
(`dask scheduler` plus `dask worker`s on several hosts, dask-kubernetes, Coiled), whose
workers read the event lake and write the offline table by the same settings.

Threads are the embedded default because they measured faster on the worlds one machine
holds (perf/scale.py, 2 cores): at 5,000 users the features flow took 18.6 s in threads and
33.2 s on `local`, and at 600 users every batch flow ran 8-9x faster in threads. A `local` run
starts its cluster, and each new worker pays its first Prefect task run and Feast store open;
the per-shard work is pyarrow, pandas and DuckDB, which release the GIL. Threads share one
process's memory, though: the 5,000-user training set peaked at 3.0 GiB in threads (every
shard's impressions at once) and took 91 s, against 79 s and 1.4 GiB a process on `local`.
When memory, not cores, is the limit, `local` is the better choice.
"""

import hashlib
import os
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
from prefect import Task, flow, unmapped
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.settings import Settings

R = TypeVar("R")


# A shard's reader tests every row of every file it reads, most of them the same few users:
# each process hashes an id once (2**18 ids, ~40 MB at most).
@lru_cache(maxsize=1 << 18)
def _user_hash(user_id: str) -> int:
    return int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8], "big")


def shard_of(user_id: str, count: int) -> int:
    """The shard of `user_id` among `count` (see the module docstring)."""
    return _user_hash(user_id) % count


def shards_of(user_ids: Iterable[str], count: int) -> np.ndarray:
    """`shard_of` of each id."""
    ids = list(user_ids)
    return np.fromiter((shard_of(u, count) for u in ids), dtype=np.int64, count=len(ids))


class Shard(BaseModel):
    """One shard of `count`: the users with shard_of(user_id, count) == index."""

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    count: int = Field(ge=1, le=4096)

    @model_validator(mode="after")
    def _index_in_range(self) -> "Shard":
        if self.index >= self.count:
            raise ValueError(f"shard index {self.index} is not below the count {self.count}")
        return self

    @classmethod
    def all(cls, count: int) -> list["Shard"]:
        return [cls(index=i, count=count) for i in range(count)]

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"

    def holds(self, user_ids: Iterable[str]) -> np.ndarray:
        """Which of `user_ids` are this shard's."""
        return shards_of(user_ids, self.count) == self.index

    def lake_filter(self) -> Callable[[pa.Table], pa.Array] | None:
        """The row filter of an EventLake.read that keeps this shard's users' events (read
        with their `user_id`), or None for the whole."""
        if self.count == 1:
            return None
        return lambda table: pa.array(self.holds(table["user_id"].to_pylist()))


WHOLE = Shard(index=0, count=1)


def task_runner(settings: Settings) -> TaskRunner:
    """The task runner of the shards' tasks (see the module docstring)."""
    if settings.dask_address is None:
        return ThreadPoolTaskRunner()
    from prefect_dask import DaskTaskRunner

    if settings.dask_address == "local":
        workers = os.cpu_count() or 1
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": workers,
                "threads_per_worker": 1,
                "dashboard_address": None,
            }
        )
    return DaskTaskRunner(address=settings.dask_address)


def run_shards(
    name: str, task: Task[..., R], settings: Settings, count: int, **same: Any
) -> list[R]:
    """`task(settings=settings, shard=shard, **same)` for every shard of `count`, each a task
    run of the subflow `name` on `task_runner(settings)`; the results in shard order.

    A subflow, because a flow's task runner is fixed when the flow starts: the calling flow's
    own steps stay in its process, and only the shards go where the settings say.
    """

    def each_shard() -> list[R]:
        for_all = {key: unmapped(value) for key, value in {"settings": settings, **same}.items()}
        return task.map(**for_all, shard=Shard.all(count)).result()

    return flow(each_shard, name=name, task_runner=task_runner(settings))()
