"""What the experiments have learned: per arm counts and pauses, in SQLite or Redis.

Per experiment the store keeps, for every arm, the decisions counted (`exposures`), how many
of them were accepted (`rewards`) and why the arm is paused, if it is; a `revision` that grows
by one with every change, which names the policy version decisions are drawn from; a
`watermark`, the time before which every decision has been counted; and the set of counted
tip ids. The posterior of an arm is Beta(1 + rewards, 1 + exposures - rewards).

Writes come in batches (the bandit_update flow) and are atomic and idempotent: a batch lists
the tip ids it counts, a tip id counted before is skipped, and counts, pauses, watermark and
revision change together or not at all (SQLite: one IMMEDIATE transaction; Redis: one Lua
script). Reads are one query; `StateCache` keeps them in-process for a few seconds, since
/generate reads the state on every request and the flow changes it every few minutes.

SQLite (data/bandit_state.sqlite) is the default; `TIPML_BANDIT_STORE=redis` uses the Redis at
`TIPML_REDIS_URL`, one hash and one set per experiment, hash-tagged to one cluster slot.
"""

import sqlite3
import time
from collections.abc import Mapping
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer
from redis.exceptions import RedisError

from service.api.prompt_versions import PromptVersionName
from service.api.request import Id
from service.circuit import Breaker, DependencyFailed
from service.redis_client import redis_client
from service.settings import Settings

SQLITE_FILE = "bandit_state.sqlite"
REDIS_PREFIX = "tipml:bandit:"
BANDIT_STATE = "bandit_state"
STORE_ERRORS: tuple[type[BaseException], ...] = (OSError, sqlite3.Error, RedisError)


class ArmState(BaseModel):
    model_config = ConfigDict(frozen=True)

    exposures: int = Field(default=0, ge=0)
    rewards: int = Field(default=0, ge=0)
    pause_reason: str | None = None

    @property
    def paused(self) -> bool:
        return self.pause_reason is not None

    @property
    def alpha(self) -> int:
        return 1 + self.rewards

    @property
    def beta(self) -> int:
        return 1 + self.exposures - self.rewards

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


class ExperimentState(BaseModel):
    model_config = ConfigDict(frozen=True)

    experiment: str
    revision: int = 0
    watermark: AwareDatetime | None = None
    arms: dict[str, ArmState] = {}

    def arm(self, name: str) -> ArmState:
        """An arm's state; an arm nothing was counted for has the prior's."""
        return self.arms.get(name, _FRESH_ARM)


_FRESH_ARM = ArmState()


class Reward(BaseModel):
    model_config = ConfigDict(frozen=True)

    tip_id: Id
    arm: PromptVersionName
    reward: int = Field(ge=0, le=1)


class Batch(BaseModel):
    """One atomic update of an experiment's state."""

    model_config = ConfigDict(frozen=True)

    experiment: Id
    rewards: tuple[Reward, ...] = ()
    # arm -> why it is paused, or None to resume it. Pausing a paused arm keeps its reason.
    pauses: dict[PromptVersionName, str | None] = {}
    # Kept only when later than the stored one.
    watermark: AwareDatetime | None = None

    @field_serializer("watermark")
    def _utc_text(self, value: datetime | None) -> str | None:
        return _timestamp(value)


class Applied(BaseModel):
    model_config = ConfigDict(frozen=True)

    state: ExperimentState
    counted: int
    duplicates: int


def _timestamp(value: datetime | None) -> str | None:
    # One fixed-width UTC spelling, so both stores can keep the later watermark by comparing text.
    return value.astimezone(UTC).isoformat(timespec="microseconds") if value else None


class BanditStateStore(Protocol):
    def read(self, experiment: str) -> ExperimentState: ...

    def apply(self, batch: Batch) -> Applied: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS experiments (
    experiment TEXT PRIMARY KEY, revision INTEGER NOT NULL, watermark TEXT
);
CREATE TABLE IF NOT EXISTS arms (
    experiment TEXT NOT NULL, arm TEXT NOT NULL,
    exposures INTEGER NOT NULL DEFAULT 0, rewards INTEGER NOT NULL DEFAULT 0, pause_reason TEXT,
    PRIMARY KEY (experiment, arm)
);
CREATE TABLE IF NOT EXISTS counted (
    experiment TEXT NOT NULL, tip_id TEXT NOT NULL, PRIMARY KEY (experiment, tip_id)
) WITHOUT ROWID;
"""


class SqliteBanditStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as conn:
            # WAL: the service's reads never wait for the flow's write, nor block it.
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30.0, isolation_level=None)

    @staticmethod
    def _read(conn: sqlite3.Connection, experiment: str) -> ExperimentState:
        row = conn.execute(
            "SELECT revision, watermark FROM experiments WHERE experiment = ?", (experiment,)
        ).fetchone()
        arms = conn.execute(
            "SELECT arm, exposures, rewards, pause_reason FROM arms WHERE experiment = ?",
            (experiment,),
        ).fetchall()
        return ExperimentState(
            experiment=experiment,
            revision=row[0] if row else 0,
            watermark=row[1] if row else None,
            arms={
                arm: ArmState(exposures=n, rewards=k, pause_reason=reason)
                for arm, n, k, reason in arms
            },
        )

    def read(self, experiment: str) -> ExperimentState:
        with closing(self._connect()) as conn:
            conn.execute("BEGIN")  # one snapshot for both queries
            try:
                return self._read(conn, experiment)
            finally:
                conn.execute("COMMIT")

    def apply(self, batch: Batch) -> Applied:
        exp = batch.experiment
        with closing(self._connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                new: dict[str, list[int]] = {}
                for r in batch.rewards:
                    cursor = conn.execute(
                        "INSERT OR IGNORE INTO counted (experiment, tip_id) VALUES (?, ?)",
                        (exp, r.tip_id),
                    )
                    if cursor.rowcount:
                        counts = new.setdefault(r.arm, [0, 0])
                        counts[0] += 1
                        counts[1] += r.reward
                conn.executemany(
                    "INSERT INTO arms (experiment, arm, exposures, rewards) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (experiment, arm) DO UPDATE SET "
                    "exposures = exposures + excluded.exposures, "
                    "rewards = rewards + excluded.rewards",
                    [(exp, arm, n, k) for arm, (n, k) in new.items()],
                )
                changed = bool(new)
                for arm, reason in batch.pauses.items():
                    if reason is None:
                        cursor = conn.execute(
                            "UPDATE arms SET pause_reason = NULL WHERE experiment = ? AND arm = ? "
                            "AND pause_reason IS NOT NULL",
                            (exp, arm),
                        )
                    else:
                        cursor = conn.execute(
                            "INSERT INTO arms (experiment, arm, pause_reason) VALUES (?, ?, ?) "
                            "ON CONFLICT (experiment, arm) DO UPDATE SET "
                            "pause_reason = excluded.pause_reason WHERE pause_reason IS NULL",
                            (exp, arm, reason),
                        )
                    changed = changed or cursor.rowcount > 0
                conn.execute(
                    "INSERT INTO experiments (experiment, revision, watermark) VALUES (?, ?, ?) "
                    "ON CONFLICT (experiment) DO UPDATE SET "
                    "revision = revision + excluded.revision, "
                    "watermark = CASE WHEN excluded.watermark > coalesce(watermark, '') "
                    "THEN excluded.watermark ELSE watermark END",
                    (exp, int(changed), _timestamp(batch.watermark)),
                )
                state = self._read(conn, exp)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        counted = sum(n for n, _ in new.values())
        return Applied(state=state, counted=counted, duplicates=len(batch.rewards) - counted)


# KEYS: the state hash, the set of counted tip ids. ARGV: the batch as JSON.
# Returns the number of tip ids counted and the state hash after the batch.
_APPLY_LUA = """
local batch = cjson.decode(ARGV[1])
local counted, changed = 0, false
for _, r in ipairs(batch.rewards) do
  if redis.call('SADD', KEYS[2], r.tip_id) == 1 then
    redis.call('HINCRBY', KEYS[1], r.arm .. ':exposures', 1)
    redis.call('HINCRBY', KEYS[1], r.arm .. ':rewards', r.reward)
    counted = counted + 1
  end
end
for arm, reason in pairs(batch.pauses) do
  local field = arm .. ':pause_reason'
  local current = redis.call('HGET', KEYS[1], field)
  if reason == cjson.null then
    if current then
      redis.call('HDEL', KEYS[1], field)
      changed = true
    end
  elseif not current then
    redis.call('HSET', KEYS[1], field, reason)
    changed = true
  end
end
if batch.watermark ~= cjson.null then
  local current = redis.call('HGET', KEYS[1], 'watermark')
  if not current or current < batch.watermark then
    redis.call('HSET', KEYS[1], 'watermark', batch.watermark)
  end
end
if counted > 0 or changed then
  redis.call('HINCRBY', KEYS[1], 'revision', 1)
end
return {counted, redis.call('HGETALL', KEYS[1])}
"""


def _parse_hash(experiment: str, fields: Mapping[bytes, bytes]) -> ExperimentState:
    """The state hash: revision, watermark and "<arm>:<exposures|rewards|pause_reason>"."""
    arms: dict[str, dict[str, object]] = {}
    for key, value in fields.items():
        name = key.decode()
        if ":" in name:  # prompt versions have no ":" (service/api/prompt_versions.py)
            arm, field = name.split(":", 1)
            arms.setdefault(arm, {})[field] = value.decode()
    watermark = fields.get(b"watermark")
    return ExperimentState(
        experiment=experiment,
        revision=int(fields.get(b"revision", 0)),
        watermark=watermark.decode() if watermark else None,
        arms={arm: ArmState.model_validate(values) for arm, values in arms.items()},
    )


class RedisBanditStore:
    def __init__(self, redis_url: str, prefix: str = REDIS_PREFIX) -> None:
        self.client = redis_client(redis_url)
        self.prefix = prefix
        self._apply = self.client.register_script(_APPLY_LUA)

    def _keys(self, experiment: str) -> list[str]:
        # The braces keep both keys in one cluster slot, which a script needs.
        base = f"{self.prefix}{{{experiment}}}"
        return [f"{base}:state", f"{base}:counted"]

    def read(self, experiment: str) -> ExperimentState:
        return _parse_hash(experiment, self.client.hgetall(self._keys(experiment)[0]))

    def apply(self, batch: Batch) -> Applied:
        keys = self._keys(batch.experiment)
        counted, flat = self._apply(keys=keys, args=[batch.model_dump_json()])
        state = _parse_hash(batch.experiment, dict(zip(flat[::2], flat[1::2], strict=True)))
        return Applied(state=state, counted=counted, duplicates=len(batch.rewards) - counted)


def open_bandit_store(settings: Settings) -> BanditStateStore:
    if settings.bandit_store == "redis":
        return RedisBanditStore(settings.redis_url)
    return SqliteBanditStore(settings.data_dir / SQLITE_FILE)


class StateRead(NamedTuple):
    state: ExperimentState
    # Why the store was not read ("timeout", "unavailable", "circuit_open"), or None.
    failure: str | None = None


class StateCache:
    """Each experiment's state as read at most `ttl_seconds` ago, for the request path.

    Reads go through a breaker with a time budget (service/circuit.py). When the store fails,
    the request gets the last state this process read, however old, or the prior if it never
    read one: decisions stay replayable, since each logs the revision it was drawn from.
    """

    def __init__(
        self, store: BanditStateStore, ttl_seconds: float = 5.0, budget: float | None = 0.1
    ) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.breaker = Breaker(BANDIT_STATE, STORE_ERRORS, budget=budget)
        self._entries: dict[str, tuple[float, ExperimentState]] = {}

    def get(self, experiment: str, budget: float | None = None) -> StateRead:
        now = time.monotonic()
        entry = self._entries.get(experiment)
        if entry is not None and now - entry[0] < self.ttl_seconds:
            return StateRead(entry[1])
        try:
            state = self.breaker.call(self.store.read, experiment, budget=budget)
        except DependencyFailed as exc:
            return StateRead(
                entry[1] if entry else ExperimentState(experiment=experiment), exc.reason
            )
        self._entries[experiment] = (now, state)
        return StateRead(state)
