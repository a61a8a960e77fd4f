"""User shards: the batch side's scale axis, and where the shards run.

Every batch computation here is independent per user (a profile is rolling windows over one
user's events; a training row joins one user's impression with that user's profile), so the
work splits by user into `count` shards, each computed by the same code as the whole. A shard
is a contiguous range of the users' hash (feature_repo/user_hash.py, h in [0, 2**63)):

    shard_of(user_id, count) = user_hash(user_id) * count // 2**63

Ranges, not `hash mod count`, because the event lake sorts its files by the same hash: a
shard's reader skips every file and row group outside its range (service/events/lake.py), so
what it reads is its own users' events, whatever the world's size. Every process, machine and
release puts a user in the same shard; changing the count moves users, so a run with a new
count recomputes in full.

Where the shards run is configuration only (`task_runner`, TIPML_DASK_ADDRESS): unset, in
threads of the flow's own process; `local`, on a Dask cluster of this machine, one
single-threaded worker process per core; `tcp://host:8786`, on an existing Dask cluster
(`dask scheduler` plus `dask worker`s on several hosts, dask-kubernetes, Coiled), whose
workers read the event lake and write the offline table by the same settings.

Threads are the embedded default because they measured faster on the worlds one machine
holds (perf/scale.py, 2 cores): at 5,000 users the features flow took 8.8 s in threads and
23.2 s on `local`, the daily run 3.2 s against 24.3 s. A `local` run starts its cluster, and
each new worker imports and warms up before its first task; the per-shard work is pyarrow,
pandas and DuckDB, which release the GIL. Threads share one process's memory, though: the
5,000-user training set peaked at 1.7 GiB in threads (every shard's impressions at once) and
took 56.8 s, against 51.1 s and under 1 GiB a process on `local`. When memory, not cores, is
the limit, `local` is the better choice.
"""

import os
import re
from collections.abc import Iterable
from typing import Any, TypeVar

import numpy as np
from prefect import Task, flow, unmapped
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from pydantic import BaseModel, ConfigDict, Field, model_validator

from feature_repo.user_hash import HASH_BITS, HashRange, user_hash, user_hashes
from service.settings import Settings

R = TypeVar("R")


def shard_of(user_id: str, count: int) -> int:
    """The shard of `user_id` among `count` (see the module docstring)."""
    return user_hash(user_id) * count >> HASH_BITS


def shards_of(user_ids: Iterable[str], count: int) -> np.ndarray:
    """`shard_of` of each id."""
    return np.array([h * count >> HASH_BITS for h in user_hashes(user_ids).tolist()], np.int64)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


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

    @classmethod
    def from_name(cls, name: str) -> "Shard | None":
        """The shard whose `name` is `name` exactly, or None when there is none."""
        if not (match := re.fullmatch(r"(\d{1,4})-of-(\d{1,4})", name, re.ASCII)):
            return None
        try:
            shard = cls(index=int(match[1]), count=int(match[2]))
        except ValueError:  # an index not below its count, a count over the limit
            return None
        return shard if shard.name == name else None  # not "01-of-3"

    @property
    def hash_range(self) -> HashRange:
        """[first, last]: the user hashes of this shard's users, both ends included (the last
        shard's last is 2**63 - 1, the largest int64)."""
        return _ceil_div(self.index << HASH_BITS, self.count), _ceil_div(
            (self.index + 1) << HASH_BITS, self.count
        ) - 1

    def holds(self, user_ids: Iterable[str]) -> np.ndarray:
        """Which of `user_ids` are this shard's."""
        first, last = self.hash_range
        hashes = user_hashes(user_ids)
        return (hashes >= first) & (hashes <= last)

    def sampled(self, fraction: float) -> HashRange | None:
        """[first, last]: this shard's users among a `fraction` of all users, those whose hash
        is below fraction * 2**63 (the same users whatever the shard count, run after run);
        None when it holds none of them."""
        first, last = self.hash_range
        last = min(last, int(fraction * 2.0**HASH_BITS) - 1)
        return (first, last) if first <= last else None

    @property
    def lake_users(self) -> HashRange | None:
        """The `users` of an EventLake.read of this shard's users' events: its hash range, or
        None for the whole."""
        return None if self.count == 1 else self.hash_range


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
