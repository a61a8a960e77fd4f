"""The recommender's machine-readable contract for profile features, derived from the table."""

import json
from pathlib import Path

from feature_repo.profile_features import PROFILE_FEATURES

CONTRACT_PATH = Path(__file__).parent / "contracts" / "profile_features.json"
CONTRACT_VERSION = 1


def profile_contract() -> dict:
    return {
        "version": CONTRACT_VERSION,
        "featureView": "user_profile",
        "entityKey": "user_id",
        "features": [
            {
                "name": f.name,
                "dtype": f.dtype,
                "ttlSec": int(f.ttl.total_seconds()),
                "source": f.source,
                "fallback": f.fallback,
                "description": f.description,
            }
            for f in PROFILE_FEATURES
        ],
    }


def render_contract() -> str:
    return json.dumps(profile_contract(), indent=2) + "\n"


def export_contract(path: Path = CONTRACT_PATH) -> Path:
    """Write the contract atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_contract())
    tmp.replace(path)
    return path
