"""The scorer's input row and its documentation come from the feature tables."""

import numpy as np

from feature_repo.categories import TIP_CATEGORIES
from feature_repo.context_features import CONTEXT_FEATURES
from feature_repo.profile_features import PROFILE_FEATURES
from flows.modeling.model_card import feature_docs
from service.scoring.model_inputs import MODEL_FEATURES, model_frame


def test_one_user_many_candidates_broadcast_to_rows_in_model_order():
    profile = {f.name: np.full(5, f.fallback) for f in PROFILE_FEATURES}
    context = {f.name: np.full(5, f.fallback) for f in CONTEXT_FEATURES}
    category = np.array([*TIP_CATEGORIES, "new-kind"])
    frame = model_frame(profile, context, category)
    assert list(frame.columns) == list(MODEL_FEATURES)
    assert (frame.dtypes == np.float64).all()
    one_hot = frame[[f"category_is_{c}" for c in TIP_CATEGORIES]].to_numpy()
    assert one_hot.sum(axis=1).tolist() == [1, 1, 1, 1, 0]


def test_model_card_documents_every_input_from_the_tables():
    docs = feature_docs()
    assert [d.name for d in docs] == list(MODEL_FEATURES)
    ttl = {d.name: d.ttl_seconds for d in docs}
    assert all(ttl[f.name] == f.ttl.total_seconds() for f in PROFILE_FEATURES)
    assert {d.name: d.fallback for d in docs if d.kind == "context"} == {
        f.name: f.fallback for f in CONTEXT_FEATURES
    }
