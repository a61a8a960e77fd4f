"""train -> register -> promote through the gate, on a simulated world, with real MLflow
(SQLite, and the local PostgreSQL) and real Prefect flows."""

import shutil
import uuid
from datetime import timedelta

import numpy as np
import pytest
from mlflow import MlflowClient

from feature_repo.cohort_features import COHORT_FEATURES
from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.feature_services import tip_scorer_v2
from feature_repo.profile_features import PROFILE_FEATURES
from feature_repo.scorer_versions import LATEST, TIP_SCORER_V1
from flows.features import FeaturesParams, features
from flows.featurestore.show_online import OnlineShowParams, read_online
from flows.modeling.registration import CARD_MARKDOWN, read_card
from flows.modeling.training_set import NotEnoughData, validation_start
from flows.promote import promote
from flows.simulate import SimulateParams, simulate
from flows.training import TrainParams, training
from service.scoring.feature_store import open_store
from service.scoring.model_inputs import model_frame
from service.scoring.model_names import CHALLENGER, CHAMPION, FEATURE_SERVICE_TAG, MODEL_NAME
from service.scoring.model_registry import ModelRejected, load_scorer, version_by_alias
from service.settings import Settings
from service.tracking import registry_client
from tests.conftest import WORLD_END, WORLD_END_TS, require_server

pytestmark = pytest.mark.usefixtures("prefect_server")

AS_OF = WORLD_END_TS + timedelta(hours=12)
TRAIN = TrainParams(as_of=AS_OF, min_rows=300)


@pytest.fixture(scope="module")
def world(tmp_path_factory, prefect_server) -> Settings:
    settings = Settings(home=tmp_path_factory.mktemp("lifecycle"))
    simulate(SimulateParams(users=200, days=28, seed=21, end=WORLD_END), settings)
    features(FeaturesParams(as_of=AS_OF), settings)
    return settings


def test_the_validation_split_depends_on_the_day_not_the_hour():
    morning, night = WORLD_END_TS + timedelta(hours=1), WORLD_END_TS + timedelta(hours=23)
    assert (
        validation_start(morning, 7)
        == validation_start(night, 7)
        == WORLD_END_TS - timedelta(days=7)
    )
    assert validation_start(WORLD_END_TS - timedelta(seconds=1), 7) == WORLD_END_TS - timedelta(
        days=8
    )


def test_train_promote_then_a_reasoned_second_decision(world):
    report = training(TRAIN, world)
    client = registry_client(world)
    challenger = version_by_alias(client, CHALLENGER)
    assert str(challenger.version) == report.version
    assert challenger.tags[FEATURE_SERVICE_TAG] == tip_scorer_v2.name
    # Validation is the 7 whole UTC days before as_of's day, whatever the hour of as_of.
    assert challenger.tags["training_window_end"] == (WORLD_END_TS - timedelta(days=7)).isoformat()

    card = read_card(client, challenger)
    assert card.metrics.oracle_auc and card.metrics.auc_to_oracle > 0.8
    # A simulated world: the ceilings and the bound are known, and the model does not beat
    # the ceiling model.
    assert card.metrics.ceiling_auc and card.metrics.ceiling_model_auc and card.metrics.bound_auc
    assert card.metrics.auc <= card.metrics.ceiling_model_auc
    assert report.ceiling_fit_seconds is not None
    assert {s.slice for s in card.fairness} == {"persona", "timezone_region", "tenure"}
    assert [d.action for d in card.rollout_history] == ["registered"]
    artifacts = {a.path for a in client.list_artifacts(challenger.run_id)}
    assert {"model_card.json", CARD_MARKDOWN, "plots", "validation"} <= artifacts
    run = client.get_run(challenger.run_id)
    assert {i.tags[0].value for i in run.inputs.dataset_inputs} == {"training", "validation"}
    assert run.data.metrics["valid_auc_to_oracle"] == pytest.approx(card.metrics.auc_to_oracle)
    assert run.data.metrics["valid_auc_to_ceiling"] == pytest.approx(card.metrics.auc_to_ceiling)
    assert run.data.metrics["valid_ceiling_model_auc"] == pytest.approx(
        card.metrics.ceiling_model_auc
    )
    assert run.data.metrics["valid_auc_to_bound"] == pytest.approx(card.metrics.auc_to_bound)

    first = promote(world)
    assert first.outcome == "promoted" and "first champion" in first.reason
    champion = version_by_alias(client, CHAMPION)
    assert champion.version == challenger.version
    assert version_by_alias(client, CHALLENGER) is None
    card = read_card(client, champion)
    assert [d.action for d in card.rollout_history] == ["registered", "promoted"]
    assert client.get_model_version(MODEL_NAME, champion.version).description == card.description()

    # The same data again trains the same model: it cannot beat the champion.
    again = training(TRAIN, world)
    second = promote(world)
    assert second.outcome == "kept" and second.challenger == again.version
    assert "beats_champion" in second.reason and "shared rows" in second.reason
    [shadow] = [c for c in second.checks if c.name == "shadow"]
    assert shadow.passed and "0 shadow requests" in shadow.detail
    assert version_by_alias(client, CHAMPION).version == champion.version
    kept = read_card(client, version_by_alias(client, CHALLENGER))
    assert kept.rollout_history[-1].action == "kept"
    assert kept.shadow is not None and kept.shadow.requests == 0
    assert kept.rollout_history[-1].reason == second.reason

    # What the service will load: the champion, with the FeatureService it was trained on.
    scorer = load_scorer(world, open_store(world))
    assert (scorer.version, scorer.feature_service) == (str(champion.version), tip_scorer_v2.name)
    profile = {f.name: np.full(2, f.fallback) for f in (*PROFILE_FEATURES, *COHORT_FEATURES)}
    context = {f.name: np.full(2, f.fallback) for f in CONTEXT_FEATURES}
    rows = model_frame(scorer.columns, profile, context, np.array(["focus", "review"]))
    p = scorer.model.predict_proba(rows)
    assert p.shape == (2, 2) and np.all((p > 0) & (p < 1))


def test_the_service_refuses_versions_it_cannot_feed(world):
    client = registry_client(world)
    store = open_store(world)
    source = version_by_alias(client, CHAMPION) or version_by_alias(client, CHALLENGER)
    if source is None:
        training(TRAIN, world)
        source = version_by_alias(client, CHALLENGER)
    bare = client.create_model_version(MODEL_NAME, source.source, run_id=source.run_id)
    client.set_registered_model_alias(MODEL_NAME, "probe", bare.version)
    try:
        with pytest.raises(ModelRejected, match=f"no {FEATURE_SERVICE_TAG} tag"):
            load_scorer(world, store, alias="probe")
        client.set_model_version_tag(MODEL_NAME, bare.version, FEATURE_SERVICE_TAG, "tip_v999")
        with pytest.raises(ModelRejected, match="'tip_v999', which is not a scorer version"):
            load_scorer(world, store, alias="probe")
        with pytest.raises(ModelRejected, match="no tip-scorer version holds the alias"):
            load_scorer(world, store, alias="nobody")
    finally:
        client.delete_model_version(MODEL_NAME, bare.version)


def test_too_little_history_fails_clearly_and_registers_nothing(world):
    client = registry_client(world)
    before = len(client.search_model_versions(f"name='{MODEL_NAME}'"))
    with pytest.raises(NotEnoughData, match="need 300 of both outcomes"):
        training(TrainParams(as_of=WORLD_END_TS - timedelta(days=24), min_rows=300), world)
    assert len(client.search_model_versions(f"name='{MODEL_NAME}'")) == before


def test_registry_on_postgres(world):
    import psycopg

    require_server("PostgreSQL", "127.0.0.1", 5432)
    schema = f"tipml_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="test", autocommit=True) as db:
        db.execute(f"CREATE SCHEMA {schema}")
        try:
            uri = f"postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path%3D{schema}"
            on_postgres = world.model_copy(update={"mlflow_tracking_uri": uri})
            report = training(TRAIN, on_postgres)
            decision = promote(on_postgres)
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            champion = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
            assert decision.outcome == "promoted"
            assert str(champion.version) == report.version == "1"
            assert champion.tags[FEATURE_SERVICE_TAG] == tip_scorer_v2.name
            tables = db.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s",
                (schema,),
            ).fetchone()[0]
            assert tables > 10  # MLflow's schema lives in Postgres, not in a SQLite file
        finally:
            db.execute(f"DROP SCHEMA {schema} CASCADE")


def test_a_v1_model_still_serves_and_a_v2_challenger_is_gated_against_it(world, tmp_path):
    """A model of the older scorer version keeps serving with its own columns, and the gate
    compares a v2 challenger with it on the challenger's rows, which hold v1's columns."""
    home = Settings(home=tmp_path / "home")
    shutil.copytree(world.home, home.home)
    (home.data_dir / "mlflow.db").unlink(missing_ok=True)  # a registry of its own
    client = registry_client(home)
    training(TRAIN.model_copy(update={"feature_service": TIP_SCORER_V1.name}), home)
    assert promote(home).outcome == "promoted"
    champion = version_by_alias(client, CHAMPION)
    assert champion.tags[FEATURE_SERVICE_TAG] == TIP_SCORER_V1.name
    # What serving reads, shown as /score reads it: v1's service, which reads no cohort.
    show = read_online(home, OnlineShowParams(user_ids=["u000001"], at=AS_OF))
    assert show.feature_service == TIP_SCORER_V1.name
    assert not {f.name for f in COHORT_FEATURES} & set(show.reads["u000001"].profile)
    asked = OnlineShowParams(user_ids=["u000001"], at=AS_OF, feature_service=LATEST)
    assert {f.name for f in COHORT_FEATURES} <= set(
        read_online(home, asked).reads["u000001"].profile
    )
    card = read_card(client, champion)
    assert [d.name for d in card.inputs] == list(TIP_SCORER_V1.columns)

    scorer = load_scorer(home, open_store(home))
    assert scorer.columns == TIP_SCORER_V1.columns
    profile = {f.name: np.full(2, f.fallback) for f in PROFILE_FEATURES}
    context = {f.name: np.full(2, f.fallback) for f in CONTEXT_FEATURES}
    rows = model_frame(scorer.columns, profile, context, np.array(["focus", "review"]))
    served = scorer.accept_probability(rows.to_numpy())
    assert np.allclose(served, scorer.model.predict_proba(rows)[:, 1], rtol=1e-12)

    training(TRAIN, home)
    decision = promote(home)
    [beats] = [c for c in decision.checks if c.name == "beats_champion"]
    assert beats.detail.startswith("log loss") and f"champion v{champion.version}" in beats.detail

    # A champion serving would refuse is not shown as if it served.
    champion = version_by_alias(client, CHAMPION)
    client.set_model_version_tag(MODEL_NAME, champion.version, FEATURE_SERVICE_TAG, "tip_scorer_v9")
    with pytest.raises(ModelRejected, match="tip_scorer_v9"):
        read_online(home, OnlineShowParams(user_ids=["u000001"], at=AS_OF))
