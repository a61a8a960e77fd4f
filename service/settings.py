"""Where tipml keeps its data and which stores it talks to, from the environment."""

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

import feature_repo

FEATURE_REPO_DIR = Path(feature_repo.__file__).parent
ENV_VARS = {
    "home": "TIPML_HOME",
    "online_store": "TIPML_ONLINE_STORE",
    "redis_url": "TIPML_REDIS_URL",
    "bandit_store": "TIPML_BANDIT_STORE",
    "mlflow_tracking_uri": "MLFLOW_TRACKING_URI",
    "events_url": "TIPML_EVENTS_URL",
    "offline_url": "TIPML_OFFLINE_URL",
    "feast_registry": "TIPML_FEAST_REGISTRY",
    "event_sink": "TIPML_EVENT_SINK",
    "nats_url": "TIPML_NATS_URL",
    "nats_namespace": "TIPML_NATS_NAMESPACE",
    "dask_address": "TIPML_DASK_ADDRESS",
    "generate_rate": "TIPML_GENERATE_RATE",
    "generate_burst": "TIPML_GENERATE_BURST",
    "rate_limit_store": "TIPML_RATE_LIMIT_STORE",
    "store_budget_ms": "TIPML_STORE_BUDGET_MS",
}
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"
NatsUrl = Annotated[str, Field(pattern=r"^(nats|tls|ws|wss)://\S+$")]
# A namespace keeps streams and subjects apart on a shared server (service/events/jetstream.py).
Namespace = Annotated[str, Field(max_length=32, pattern=r"^[A-Za-z0-9_-]*$")]


class Settings(BaseModel):
    """`home` is the Feast repo path: Feast's relative paths and tipml's data live under it.

    Each field is a global option of `tipml` too (tipml/cli_support.py): its description is the
    option's help, and a Literal's values are the option's choices.
    """

    model_config = ConfigDict(frozen=True)

    home: Path = Field(
        default=FEATURE_REPO_DIR,
        description="Feast repo path and data root (default: the feature_repo package).",
    )
    online_store: Literal["sqlite", "redis"] = Field(
        default="sqlite", description="Online feature store."
    )
    redis_url: str = Field(
        default="127.0.0.1:6379",
        pattern=r"^[^\s,]+:\d+(,\S+)?$",
        description="Redis for the stores set to redis: host:port[,db=N].",
    )
    bandit_store: Literal["sqlite", "redis"] = Field(
        default="sqlite", description="Where prompt experiments keep their bandit posteriors."
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking/registry URI (default: SQLite under the data dir).",
    )
    events_url: str | None = Field(
        default=None,
        min_length=1,
        description="The event lake: a path or s3://bucket/prefix (default: events under the "
        "data dir).",
    )
    offline_url: str | None = Field(
        default=None,
        min_length=1,
        description="The offline feature data (profile table and profile state): a path or "
        "s3://bucket/prefix (default: offline under the data dir).",
    )
    feast_registry: str | None = Field(
        default=None,
        pattern=r"^s3://[^/\s]+/\S+$",
        description="The Feast registry as an object, s3://bucket/key, for batch workers on "
        "other hosts (default: registry.db under the data dir).",
    )
    event_sink: Literal["local", "jetstream"] = Field(
        default="local",
        description="Where the service's feedback and decisions go: local = appended to the "
        "event lake by the service; jetstream = published to NATS, `tipml consume` appends them.",
    )
    nats_url: NatsUrl = Field(
        default=DEFAULT_NATS_URL,
        description="NATS JetStream: the service's sink in jetstream mode, and `tipml consume`.",
    )
    nats_namespace: Namespace = Field(
        default="",
        description="Streams NAME_<ns> on <ns>.* subjects, apart from the live ones (tests, "
        "benches).",
    )

    dask_address: str | None = Field(
        default=None,
        pattern=r"^(local|(tcp|tls|inproc|ucx)://\S+)$",
        description="Where the batch flows run their user shards: unset = threads in the flow's "
        "process; local = a Dask cluster on this machine; tcp://host:8786 = an existing Dask "
        "scheduler.",
    )

    generate_rate: int | None = Field(
        default=None,
        ge=1,
        description="Requests per minute one user_id may make to /generate, which spends LLM "
        "money; past it a 429 with Retry-After (default: no limit).",
    )
    generate_burst: int | None = Field(
        default=None,
        ge=1,
        description="How many /generate requests one user_id may make at once before the "
        "per-minute rate applies (default: the rate).",
    )
    rate_limit_store: Literal["memory", "redis"] = Field(
        default="memory",
        description="Where the /generate rate limit counts: memory = in each worker process "
        "(a user may get up to workers x replicas x the rate); redis = exact across workers "
        "and replicas, in the Redis at redis_url.",
    )

    store_budget_ms: int = Field(
        default=50,
        ge=1,
        le=60_000,
        description="Time budget in ms of each call to a networked store on the request path "
        "(the Redis online store, the Redis rate limit); past it the request takes its fallback "
        "and says so in dependency_fallbacks.",
    )

    @model_validator(mode="after")
    def _burst_needs_a_rate(self) -> "Settings":
        if self.generate_burst is not None and self.generate_rate is None:
            raise ValueError("generate_burst limits nothing without generate_rate")
        return self

    @classmethod
    def from_env(cls) -> "Settings":
        return cls.model_validate(
            {field: os.environ[var] for field, var in ENV_VARS.items() if os.environ.get(var)}
        )

    @property
    def store_budget_s(self) -> float:
        return self.store_budget_ms / 1000

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def events_dir(self) -> Path:
        """The event lake's default place, under the data dir."""
        return self.data_dir / "events"

    @property
    def events_location(self) -> str:
        """Where the event lake is (service/events/lake.py): TIPML_EVENTS_URL or events_dir."""
        return self.events_url or str(self.events_dir)

    @property
    def offline_location(self) -> str:
        """Where the offline feature data is (flows/featurestore/offline_table.py):
        TIPML_OFFLINE_URL or offline under the data dir."""
        return self.offline_url or str(self.data_dir / "offline")

    @property
    def default_registry(self) -> Path:
        """The embedded MLflow backend, a SQLite file in the data dir, used when
        MLFLOW_TRACKING_URI is unset."""
        return self.data_dir / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.default_registry}"

    @property
    def has_registry(self) -> bool:
        """False only for an embedded registry not created yet: opening it would create it."""
        return self.mlflow_tracking_uri is not None or self.default_registry.exists()

    @property
    def artifact_location(self) -> str:
        """Where new experiments keep artifacts, whatever the tracking backend."""
        return (self.data_dir / "mlartifacts").resolve().as_uri()

    @property
    def shadow_dir(self) -> Path:
        """Champion and challenger scores of the same live requests (service/scoring/shadow.py)."""
        return self.data_dir / "shadow"

    @property
    def spool_dir(self) -> Path:
        """Events this replica could not publish yet, until they are (service/events/sink.py)."""
        return self.data_dir / "spool"

    @property
    def world_dir(self) -> Path:
        """Simulator ground truth (personas, true preferences): never read by serving."""
        return self.data_dir / "world"

    @property
    def bench_dir(self) -> Path:
        """The tip benchmark's ledger, judge files and reports (benchmark/)."""
        return self.data_dir / "bench"


# from_env reads the fields ENV_VARS names, and each field is a CLI option read from its entry.
if set(ENV_VARS) != set(Settings.model_fields):
    raise RuntimeError(
        f"ENV_VARS covers {sorted(ENV_VARS)}, but Settings has {sorted(Settings.model_fields)}"
    )
