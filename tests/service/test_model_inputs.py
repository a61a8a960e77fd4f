"""The scorer's input row and its documentation come from the feature tables, per version."""

import numpy as np
import pytest

from feature_repo.candidate_features import CANDIDATE_FEATURES
from feature_repo.categories import TIP_CATEGORIES
from feature_repo.cohort_features import COHORT_FEATURES
from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.profile_features import PROFILE_FEATURES
from feature_repo.scorer_versions import SCORER_VERSIONS, TIP_SCORER_V1, TIP_SCORER_V2
from flows.modeling.model_card import feature_docs
from service.scoring.model_inputs import model_frame


def inputs(rows: int) -> tuple[dict, dict]:
    profile = {f.name: np.full(rows, f.fallback) for f in (*PROFILE_FEATURES, *COHORT_FEATURES)}
    return profile, {f.name: np.full(rows, f.fallback) for f in CONTEXT_FEATURES}


@pytest.mark.parametrize("version", SCORER_VERSIONS.values(), ids=SCORER_VERSIONS)
def test_one_user_many_candidates_broadcast_to_rows_in_model_order(version):
    profile, context = inputs(5)
    category = np.array([*TIP_CATEGORIES, "new-kind"])
    frame = model_frame(version.columns, profile, context, category)
    assert list(frame.columns) == list(version.columns)
    assert (frame.dtypes == np.float64).all()
    one_hot = frame[[f"category_is_{c}" for c in TIP_CATEGORIES]].to_numpy()
    assert one_hot.sum(axis=1).tolist() == [1, 1, 1, 1, 0]


def test_every_version_names_known_inputs_once_and_v2_adds_to_v1():
    known = {
        *(f.name for f in (*PROFILE_FEATURES, *CONTEXT_FEATURES, *CANDIDATE_FEATURES)),
        *(f"category_is_{c}" for c in TIP_CATEGORIES),
    }
    for version in SCORER_VERSIONS.values():
        assert set(version.columns) <= known
        assert len(set(version.columns)) == len(version.columns)
    # The promotion gate scores an older champion on a newer challenger's rows.
    assert set(TIP_SCORER_V1.columns) < set(TIP_SCORER_V2.columns)


def test_v1s_rows_are_what_they_were_before_v2():
    profile, context = inputs(4)
    category = np.array(TIP_CATEGORIES)
    v1 = model_frame(TIP_SCORER_V1.columns, profile, context, category)
    v2 = model_frame(TIP_SCORER_V2.columns, profile, context, category)
    assert v2[list(TIP_SCORER_V1.columns)].equals(v1)


@pytest.mark.parametrize("version", SCORER_VERSIONS.values(), ids=SCORER_VERSIONS)
def test_model_card_documents_every_input_from_the_tables(version):
    docs = feature_docs(version.name)
    model_inputs = [d.name for d in docs if d.kind != "cohort"]
    assert model_inputs == list(version.columns)
    cohort = [d.name for d in docs if d.kind == "cohort"]
    assert cohort == ([f.name for f in COHORT_FEATURES] if version.reads_cohort else [])
    ttl = {d.name: d.ttl_seconds for d in docs}
    assert all(ttl[f.name] == f.ttl.total_seconds() for f in PROFILE_FEATURES)
    assert {d.name: d.fallback for d in docs if d.kind == "context"} == {
        f.name: f.fallback for f in CONTEXT_FEATURES
    }
