"""Per-feature TTL and fallbacks, the rule both read paths apply."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from feature_repo.freshness import FallbackReason, fallback_profile, resolve_profiles
from feature_repo.profile_features import PROFILE_FEATURES

FEATURES = {f.name: f for f in PROFILE_FEATURES}
NOW = datetime(2026, 11, 20, 12, tzinfo=UTC)


def raw(value_by_name: dict, rows: int = 1) -> dict[str, list]:
    return {f.name: [value_by_name.get(f.name, 1)] * rows for f in PROFILE_FEATURES}


def test_fresh_values_pass_through_typed_as_the_table():
    values, reasons = resolve_profiles(raw({"tip_accept_rate_28d": 0.4}), [NOW], [NOW])
    assert values["tip_accept_rate_28d"][0] == 0.4
    assert values["tips_shown_7d"].dtype == np.int64
    assert values["tip_accept_rate_28d"].dtype == np.float64
    assert not any(r[0] for r in reasons.values())


def test_a_value_older_than_its_own_ttl_falls_back_as_stale():
    short, long = FEATURES["tips_shown_7d"], FEATURES["preferred_hour"]
    assert short.ttl < long.ttl
    as_of = NOW - (short.ttl + timedelta(seconds=1))
    values, reasons = resolve_profiles(
        raw({"preferred_hour": 9, "tips_shown_7d": 5}), [as_of], [NOW]
    )
    assert (values["tips_shown_7d"][0], reasons["tips_shown_7d"][0]) == (short.fallback, "stale")
    assert (values["preferred_hour"][0], reasons["preferred_hour"][0]) == (9, "")


def test_exactly_at_the_ttl_is_still_fresh():
    ttl = FEATURES["tips_shown_7d"].ttl
    values, reasons = resolve_profiles(raw({"tips_shown_7d": 5}), [NOW - ttl], [NOW])
    assert (values["tips_shown_7d"][0], reasons["tips_shown_7d"][0]) == (5, "")


def test_nulls_and_missing_rows_fall_back_as_missing():
    values, reasons = resolve_profiles(
        raw({"preferred_hour": None, "accept_rate_focus_28d": float("nan")}), [NOW], [NOW]
    )
    assert (values["preferred_hour"][0], reasons["preferred_hour"][0]) == (-1, "missing")
    assert reasons["accept_rate_focus_28d"][0] == "missing"
    _, no_row = resolve_profiles(raw({}), [None], [NOW])
    assert all(r[0] == FallbackReason.MISSING for r in no_row.values())


def test_rows_are_independent_and_timestamps_may_be_naive_utc_or_strings():
    as_of = [NOW, pd.Timestamp("2026-11-01 00:00:00"), "2026-11-20T00:00:00Z"]
    values, reasons = resolve_profiles(raw({"tips_shown_7d": 3}, rows=3), as_of, [NOW] * 3)
    assert list(reasons["tips_shown_7d"]) == ["", "stale", ""]
    assert list(values["tips_shown_7d"]) == [3, 0, 3]


def test_store_unavailable_falls_back_everything():
    values, reasons = fallback_profile(2, FallbackReason.STORE_UNAVAILABLE)
    assert {name: v[1] for name, v in values.items()} == {
        f.name: f.fallback for f in PROFILE_FEATURES
    }
    assert {r[0] for r in reasons.values()} == {"store_unavailable"}
