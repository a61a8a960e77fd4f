"""Open the Feast store for a tipml home, with the embedded or the Redis online store."""

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from string import Template

import yaml
from feast import FeatureStore
from feast.repo_config import RepoConfig

from feature_repo.repo import FEAST_OBJECTS
from service.settings import ENV_VARS, FEATURE_REPO_DIR, Settings

# Feast warns on every historical read that on-demand views are experimental; we know.
warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")

CONFIG_FILES = {"sqlite": "feature_store.yaml", "redis": "feature_store.redis.yaml"}


def repo_config(settings: Settings) -> RepoConfig:
    """The checked-in feature_store.yaml for the chosen online store, rooted at `home`."""
    text = (FEATURE_REPO_DIR / CONFIG_FILES[settings.online_store]).read_text()
    raw = yaml.safe_load(
        Template(text).safe_substitute({ENV_VARS["redis_url"]: settings.redis_url})
    )
    config = RepoConfig(**raw)
    config.repo_path = settings.home
    return config


def open_store(settings: Settings) -> FeatureStore:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(settings.home), config=repo_config(settings))


def apply_definitions(store: FeatureStore) -> None:
    """Register the feature repo's objects, as `feast apply` would; a no-op when unchanged."""
    store.apply(list(FEAST_OBJECTS))


@contextlib.contextmanager
def offline_reads(settings: Settings, root: Path | None = None) -> Iterator[None]:
    """Run Feast offline reads from the repo path, or from `root`: a directory holding part of
    the repo's offline files under the same relative paths, in a DuckDB connection of their
    own, closed on exit. Both are process-wide: one block at a time in a process.

    Feast's DuckDB offline store opens relative FileSource paths from the process's cwd, not
    from the repo path as its file store and the `feast` CLI (run inside the repo) do. It runs
    on ibis's default connection, where each read registers its entity frame and its files as
    views that are never dropped: a worker building shard after shard kept ~40 MB more for
    each, until the connection they live in is closed.
    """
    import ibis

    previous = ibis.options.default_backend
    connection = ibis.duckdb.connect()
    ibis.set_backend(connection)
    try:
        with contextlib.chdir(root or settings.home):
            yield
    finally:
        ibis.options.default_backend = previous
        connection.disconnect()
