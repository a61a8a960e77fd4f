"""Table, Feast registry and the recommender's JSON contract must agree."""

import json

import pytest
from feast.repo_operations import get_repo_files
from feast.types import Int64

from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.contract import CONTRACT_PATH, contract_mismatches, render_contract
from feature_repo.feature_services import tip_scorer_v1
from feature_repo.feature_views import user_profile
from feature_repo.profile_features import PROFILE_AS_OF, PROFILE_FEATURES
from service.scoring.feature_store import apply_definitions, open_store
from service.settings import FEATURE_REPO_DIR


@pytest.fixture(scope="module")
def registry_store(tmp_path_factory):
    from service.settings import Settings

    store = open_store(Settings(home=tmp_path_factory.mktemp("home")))
    apply_definitions(store)
    return store


def test_checked_in_contract_is_current():
    assert CONTRACT_PATH.read_text() == render_contract()


def test_registry_view_and_contract_agree_with_the_table(registry_store):
    view = registry_store.get_feature_view("user_profile")
    contract = json.loads(CONTRACT_PATH.read_text())
    assert contract_mismatches(contract, view) == []
    assert [f["name"] for f in contract["features"]] == [f.name for f in PROFILE_FEATURES]
    assert {f.name for f in view.features} == {f.name for f in PROFILE_FEATURES} | {PROFILE_AS_OF}
    assert len(PROFILE_FEATURES) >= 8


def test_a_drifted_contract_is_caught(registry_store):
    view = registry_store.get_feature_view("user_profile")
    contract = json.loads(CONTRACT_PATH.read_text())
    contract["features"][0]["ttlSec"] += 1
    contract["features"].append({"name": "extra"})
    problems = contract_mismatches(contract, view)
    assert any(PROFILE_FEATURES[0].name in p for p in problems)
    assert any("extra" in p for p in problems)


def test_a_drifted_view_is_caught():
    view = user_profile.__copy__()
    view.features = [f for f in view.features if f.name != "streak_days"]
    view.features[0] = view.features[0].__class__(name=view.features[0].name, dtype=Int64)
    problems = contract_mismatches(json.loads(CONTRACT_PATH.read_text()), view)
    assert "view user_profile lacks streak_days" in problems
    assert any(PROFILE_FEATURES[0].name in p and "differs" in p for p in problems)


def test_context_view_matches_its_table(registry_store):
    odfv = registry_store.get_on_demand_feature_view("request_context_features")
    assert [(f.name, f.dtype) for f in odfv.features] == [(f.name, Int64) for f in CONTEXT_FEATURES]


def test_feature_service_serves_profile_and_context(registry_store):
    service = registry_store.get_feature_service(tip_scorer_v1.name)
    assert [p.name for p in service.feature_view_projections] == [
        "user_profile",
        "request_context_features",
    ]


def test_feast_cli_sees_only_the_aggregating_module():
    # Anything else imported by `feast apply` would register each object twice.
    assert [p.name for p in get_repo_files(FEATURE_REPO_DIR)] == ["repo.py"]
