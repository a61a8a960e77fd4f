"""The shadow summary the promotion gate reads, on records with known answers."""

import pytest

from flows.modeling.gates import POLICY
from flows.modeling.shadow_summary import shadow_check, summarize


def record(champion: list[float], challenger: list[float], versions=("1", "2")) -> dict:
    return {
        "champion_version": versions[0],
        "challenger_version": versions[1],
        "champion_scores": champion,
        "challenger_scores": challenger,
    }


def test_identical_models_agree_fully():
    s = summarize([record([0.1, 0.3, 0.2], [0.1, 0.3, 0.2])] * 3, "1", "2")
    assert (s.requests, s.rank_agreement, s.top_choice_agreement, s.mean_score_shift) == (
        3,
        1.0,
        1.0,
        0.0,
    )


def test_reversed_rankings_and_a_shift_are_measured():
    s = summarize(
        [record([0.1, 0.2, 0.3], [0.4, 0.3, 0.2]), record([0.1, 0.2, 0.3], [0.1, 0.2, 0.3])],
        "1",
        "2",
    )
    assert s.rank_agreement == pytest.approx(0.0)  # -1 and +1
    assert s.top_choice_agreement == 0.5
    assert s.mean_score_shift == pytest.approx((0.3 + 0.1 - 0.1) / 6)


def test_other_version_pairs_are_ignored():
    s = summarize([record([0.1, 0.2], [0.2, 0.1], versions=("1", "3"))], "1", "2")
    assert s.requests == 0 and s.rank_agreement is None


def test_the_gate_waits_for_enough_traffic_then_checks_it():
    agreeing = [record([0.1, 0.2, 0.3], [0.11, 0.21, 0.31])]
    few = summarize(agreeing * (POLICY.min_shadow_requests - 1), "1", "2")
    assert shadow_check(few).passed and "not gated yet" in shadow_check(few).detail
    enough = summarize(agreeing * POLICY.min_shadow_requests, "1", "2")
    assert shadow_check(enough).passed
    shifted = [record([0.1, 0.2, 0.3], [0.3, 0.4, 0.5])] * POLICY.min_shadow_requests
    assert not shadow_check(summarize(shifted, "1", "2")).passed
    reversed_ = [record([0.1, 0.2, 0.3], [0.3, 0.2, 0.1])] * POLICY.min_shadow_requests
    assert not shadow_check(summarize(reversed_, "1", "2")).passed
