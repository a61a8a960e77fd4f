"""The recommender's machine-readable contract for profile features, derived from the table."""

import json
from pathlib import Path

from feast import FeatureView

from feature_repo.bounds import ALL_DAY_DUE_TIME, EARLIEST, LATEST, MAX_TIMEZONE_CHARS
from feature_repo.feature_views import feature_field
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES

CONTRACT_PATH = Path(__file__).parent / "contracts" / "profile_features.json"
# 2: each feature's accepted range, and the rules for the request context's values.
CONTRACT_VERSION = 2


def _request_context_rules() -> dict:
    return {
        "timestamps": {
            "format": "ISO 8601 with an offset",
            "from": EARLIEST.isoformat(),
            "until": LATEST.isoformat(),
        },
        "timezone": {
            "format": "an IANA zone name from tzdata (not a directory such as 'America')",
            "maxChars": MAX_TIMEZONE_CHARS,
        },
        "allDayDue": {
            "format": "YYYY-MM-DD",
            "meaning": "due at the end of that day in the request's timezone",
            "localTime": ALL_DAY_DUE_TIME.isoformat(),
        },
    }


def profile_contract() -> dict:
    return {
        "version": CONTRACT_VERSION,
        "featureView": "user_profile",
        "entityKey": "user_id",
        "requestContext": _request_context_rules(),
        "features": [
            {
                "name": f.name,
                "dtype": f.dtype,
                "ttlSec": int(f.ttl.total_seconds()),
                "source": f.source,
                "fallback": f.fallback,
                "minimum": f.minimum,
                "maximum": f.maximum,
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


def contract_mismatches(contract: dict, view: FeatureView) -> list[str]:
    """Every way the table, a FeatureView and a contract document disagree; [] when they agree."""
    problems: list[str] = []
    expected = profile_contract()
    if contract != expected:
        have = {f["name"]: f for f in contract.get("features", [])}
        for want in expected["features"]:
            got = have.pop(want["name"], None)
            if got != want:
                problems.append(f"contract {want['name']}: {got} != table {want}")
        problems += [f"contract has {name}, the table does not" for name in have]
        if {k: v for k, v in contract.items() if k != "features"} != {
            k: v for k, v in expected.items() if k != "features"
        }:
            problems.append("contract header differs from the table's")

    fields = {f.name: f for f in view.features}
    fields.pop(PROFILE_AS_OF, None)
    for feature in PROFILE_FEATURES:
        field = fields.pop(feature.name, None)
        if field is None:
            problems.append(f"view {view.name} lacks {feature.name}")
            continue
        want = feature_field(feature)
        if (field.dtype, field.tags, field.description) != (
            want.dtype,
            want.tags,
            want.description,
        ):
            problems.append(f"view {view.name}.{feature.name} differs from the table")
    problems += [f"view {view.name} has {name}, the table does not" for name in fields]
    if view.ttl != max(f.ttl for f in PROFILE_FEATURES):
        problems.append(f"view {view.name} TTL {view.ttl} is not the longest feature TTL")
    return problems
