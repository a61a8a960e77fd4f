"""Open the Feast store for a tipml home, with the embedded or the Redis online store."""

import warnings
from string import Template

import yaml
from feast import FeatureStore
from feast.repo_config import RepoConfig

from feature_repo.repo import FEAST_OBJECTS
from service import known_warnings
from service.settings import ENV_VARS, FEATURE_REPO_DIR, Settings

# Feast warns on every historical read that on-demand views are experimental; we know.
warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")
# Importing Feast put its "once" DeprecationWarning filter in front of ours.
known_warnings.silence()

CONFIG_FILES = {"sqlite": "feature_store.yaml", "redis": "feature_store.redis.yaml"}


def repo_config(settings: Settings) -> RepoConfig:
    """The checked-in feature_store.yaml for the chosen online store, rooted at `home`, with
    the registry at TIPML_FEAST_REGISTRY when set (Feast reads s3:// through boto3, which
    takes its endpoint and credentials from the standard AWS variables)."""
    text = (FEATURE_REPO_DIR / CONFIG_FILES[settings.online_store]).read_text()
    raw = yaml.safe_load(
        Template(text).safe_substitute({ENV_VARS["redis_url"]: settings.redis_url})
    )
    if settings.feast_registry:
        raw["registry"]["path"] = settings.feast_registry
    config = RepoConfig(**raw)
    config.repo_path = settings.home
    return config


def open_store(settings: Settings) -> FeatureStore:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(settings.home), config=repo_config(settings))


def apply_definitions(store: FeatureStore) -> None:
    """Register the feature repo's objects, as `feast apply` would; a no-op when unchanged."""
    store.apply(list(FEAST_OBJECTS))
