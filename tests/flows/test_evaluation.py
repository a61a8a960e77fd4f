"""Offline metrics and the promotion policy, on cases with known answers."""

import numpy as np
import pandas as pd
import pytest

from flows.modeling.evaluation import (
    Metrics,
    SliceRow,
    evaluate,
    expected_calibration_error,
    reliability_plot,
    slice_table,
)
from flows.modeling.gates import POLICY, absolute_checks, largest_gap


def test_ece_is_zero_when_every_bin_is_exact_and_the_gap_otherwise():
    p = np.repeat(np.linspace(0.05, 0.5, 10), 100)
    y = np.concatenate(
        [np.r_[np.ones(int(q * 100)), np.zeros(100 - int(q * 100))] for q in p[::100]]
    )
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=0.01)
    assert expected_calibration_error(y, np.clip(p + 0.1, 0, 1)) == pytest.approx(0.1, abs=0.01)


def test_evaluate_reports_auc_and_the_oracle():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.01, 0.6, 20_000)
    y = (rng.random(truth.size) < truth).astype(int)
    m = evaluate(y, truth, oracle=truth)
    assert m.auc == m.oracle_auc and m.auc_to_oracle == 1.0
    noisy = evaluate(y, truth + rng.normal(0, 0.2, truth.size), oracle=truth)
    assert noisy.auc < m.auc and noisy.auc_to_oracle < 1
    assert m.ece < 0.02 and m.rows == 20_000 and m.positives == y.sum()


def test_slices_report_auc_and_mean_predicted_vs_observed():
    y = np.array([1, 0, 0, 0, 1, 1])
    p = np.array([0.9, 0.1, 0.2, 0.5, 0.5, 0.5])
    rows = slice_table(y, p, pd.DataFrame({"tenure": ["new"] * 3 + ["tenured"] * 3}))
    new, tenured = rows
    assert (new.value, new.rows, new.auc) == ("new", 3, 1.0)
    assert new.mean_predicted == pytest.approx(0.4) and new.observed == pytest.approx(1 / 3)
    assert tenured.auc == 0.5 and tenured.gap == pytest.approx(abs(0.5 - 2 / 3))


def metrics(auc: float, oracle: float, ece: float = 0.01) -> Metrics:
    return Metrics(
        rows=1000, positives=100, auc=auc, log_loss=0.3, brier=0.1, ece=ece, oracle_auc=oracle
    )


def slice_row(gap: float, rows: int) -> SliceRow:
    return SliceRow(
        slice="persona", value="x", rows=rows, auc=0.7, mean_predicted=0.1 + gap, observed=0.1
    )


def test_gates_pass_just_inside_the_thresholds_and_fail_beyond():
    inside = 1e-9
    ok = absolute_checks(
        metrics((POLICY.min_auc_to_oracle + inside) * 0.8, 0.8, ece=POLICY.max_ece - inside),
        [slice_row(POLICY.max_fairness_gap - inside, 500)],
    )
    assert all(c.passed for c in ok)
    bad = absolute_checks(metrics(0.7, 0.8, ece=0.05), [slice_row(0.08, 500)])
    assert {c.name for c in bad if not c.passed} == {"auc_to_oracle", "calibration", "fairness_gap"}
    assert "persona=x" in next(c.detail for c in bad if c.name == "fairness_gap")


def test_small_slices_are_reported_but_not_gated():
    small = slice_row(0.3, POLICY.min_slice_rows - 1)
    assert largest_gap([small]) is None
    assert all(c.passed for c in absolute_checks(metrics(0.75, 0.8), [small]))


def test_without_an_oracle_the_ratio_gate_fails_closed():
    no_oracle = metrics(0.75, 0.8).model_copy(update={"oracle_auc": None})
    [ratio] = [c for c in absolute_checks(no_oracle, []) if c.name == "auc_to_oracle"]
    assert not ratio.passed


def test_reliability_plot_renders(tmp_path):
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 0.5, 500)
    fig = reliability_plot((rng.random(500) < p).astype(int), p, "test")
    fig.savefig(tmp_path / "plot.png")
    assert (tmp_path / "plot.png").stat().st_size > 5000
