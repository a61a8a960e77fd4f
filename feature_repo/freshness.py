"""Resolve raw profile values into what a model sees: per-feature TTL, then fallback.

Feast returns online values however old they are (feast-dev/feast#6821), and its offline
join knows one TTL per view. Both read paths therefore pass their raw rows through
`resolve_profiles` (the user's profile) and `resolve_cohorts` (the request zone's cohort),
which treat a value older than its feature's TTL as missing, apply the feature's fallback, and
say which features fell back and why.
"""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum

import numpy as np
import pandas as pd

from feature_repo.cohort_features import COHORT_FEATURES
from feature_repo.profile_features import PROFILE_FEATURES, ProfileFeature


class FallbackReason(StrEnum):
    MISSING = "missing"
    STALE = "stale"
    STORE_UNAVAILABLE = "store_unavailable"


_REASONS = np.array(["", FallbackReason.MISSING.value, FallbackReason.STALE.value])


def _epoch_seconds(values: Sequence | np.ndarray | pd.Series) -> np.ndarray:
    """Seconds since the epoch as float, NaN where unknown; naive times are UTC.

    Vectorized for datetime columns (the training read), a plain loop for the few values of
    one online row: pandas' general parser costs more than the whole serving read.
    """
    if isinstance(values, pd.Series) and pd.api.types.is_datetime64_any_dtype(values):
        stamps = values if values.dt.tz is not None else values.dt.tz_localize("UTC")
        seconds = (stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)
        return seconds.to_numpy(dtype=np.float64, na_value=np.nan)
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        if value is None or value is pd.NaT or (isinstance(value, float) and np.isnan(value)):
            out[i] = np.nan
            continue
        if not isinstance(value, datetime):
            value = pd.Timestamp(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        out[i] = value.timestamp()
    return out


class Freshness:
    """TTL and fallbacks of one table of features, applied to rows of raw values."""

    def __init__(self, features: tuple[ProfileFeature, ...]) -> None:
        self.features = features
        self.ttl = np.array([f.ttl.total_seconds() for f in features])
        self.fallbacks = np.array([f.fallback for f in features], dtype=np.float64)

    def _float_matrix(self, raw: Mapping[str, Sequence | np.ndarray | pd.Series]) -> np.ndarray:
        """Rows x features as float, NaN where absent (None, NaN, pd.NA)."""
        columns = [raw[f.name] for f in self.features]
        if all(isinstance(c, pd.Series) for c in columns):
            return np.column_stack([c.to_numpy(dtype=np.float64, na_value=np.nan) for c in columns])
        # One conversion for all features: a served row is a dozen Python values.
        return np.array(
            [[np.nan if v is None or v is pd.NA else v for v in c] for c in columns],
            dtype=np.float64,
        ).T

    def resolve(
        self,
        raw: Mapping[str, Sequence],
        as_of: Sequence,
        now: Sequence,
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Apply TTL and fallbacks to rows of raw values.

        `raw[name]` holds one value per row (None or NaN when absent); `as_of` is when each
        row's features were computed (None when the store had no row) and `now` the time the
        row is read for. Returns the resolved values per feature, typed as the table says, and
        the fallback reason per feature and row ("" where the stored value was used).
        """
        # All features at once, as a rows x features matrix: the same dozen array operations
        # whether a training read passes a million rows or /score passes one.
        age = (_epoch_seconds(now) - _epoch_seconds(as_of))[:, None]
        stored = self._float_matrix(raw)
        missing = np.isnan(stored) | np.isnan(age)
        stale = ~missing & (age > self.ttl)
        resolved = np.where(missing | stale, self.fallbacks, stored)
        reason = _REASONS[np.where(missing, 1, np.where(stale, 2, 0))]
        values = {
            f.name: resolved[:, j].astype(np.int64 if f.dtype == "int64" else float)
            for j, f in enumerate(self.features)
        }
        reasons = {f.name: reason[:, j] for j, f in enumerate(self.features)}
        return values, reasons

    def fallback(self, rows: int, reason: FallbackReason) -> tuple[dict, dict]:
        """Every feature at its fallback, for when no stored value can be read at all."""
        values = {
            f.name: np.full(rows, f.fallback, dtype=np.int64 if f.dtype == "int64" else float)
            for f in self.features
        }
        reasons = {f.name: np.full(rows, reason.value) for f in self.features}
        return values, reasons


_PROFILES = Freshness(PROFILE_FEATURES)
_COHORTS = Freshness(COHORT_FEATURES)
resolve_profiles = _PROFILES.resolve
fallback_profile = _PROFILES.fallback
resolve_cohorts = _COHORTS.resolve
fallback_cohort = _COHORTS.fallback
