"""The promotion policy: every threshold a model must pass to serve, in one place."""

from pydantic import BaseModel, ConfigDict

from flows.modeling.evaluation import Metrics, SliceRow


class PromotionPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    # Model AUC over the Bayes-optimal (oracle) AUC on the same validation rows. The gate keeps
    # reading this ratio, not AUC over the observable ceiling that the card shows beside it
    # (flows/modeling/ceiling.py): the ceiling needs the simulator's truth as the oracle does,
    # so it gates no world the oracle cannot; it is no reachable 1.0 either (it knows every
    # user's true traits); on the default world it is 0.002 AUC below the oracle (the prompt
    # versions' effects are small), so both ratios pass and fail the same models; and cards
    # registered before it carry no ceiling, so promote would fail them closed. Move to the
    # ceiling ratio if PROMPT_EFFECT's spread grows enough for the oracle ratio to fail models
    # for what no scorer can know.
    min_auc_to_oracle: float = 0.90
    # Expected calibration error on validation: probabilities must mean what they say.
    max_ece: float = 0.03
    # Largest |mean predicted - observed accept rate| allowed in any slice.
    max_fairness_gap: float = 0.05
    # Slices smaller than this are reported but too noisy to gate on.
    min_slice_rows: int = 200
    # Rows both models never trained on, needed to compare challenger and champion.
    min_comparison_rows: int = 500
    # Shadow traffic (the challenger scoring live requests): gated only once there is enough.
    min_shadow_requests: int = 100
    # Mean per-request Spearman correlation of the two models' candidate scores.
    min_shadow_rank_agreement: float = 0.5
    # |mean(challenger score - champion score)| on the same live candidates.
    max_shadow_score_shift: float = 0.05


POLICY = PromotionPolicy()


class GateCheck(BaseModel):
    name: str
    passed: bool
    detail: str


def largest_gap(slices: list[SliceRow], policy: PromotionPolicy = POLICY) -> SliceRow | None:
    gated = [s for s in slices if s.rows >= policy.min_slice_rows]
    return max(gated, key=lambda s: s.gap, default=None)


def absolute_checks(
    metrics: Metrics, slices: list[SliceRow], policy: PromotionPolicy = POLICY
) -> list[GateCheck]:
    """Checks a model passes on its own validation rows, whatever else is serving."""
    checks = []
    ratio = metrics.auc_to_oracle
    if ratio is None:
        checks.append(
            GateCheck(name="auc_to_oracle", passed=False, detail="no oracle AUC to compare with")
        )
    else:
        checks.append(
            GateCheck(
                name="auc_to_oracle",
                passed=ratio >= policy.min_auc_to_oracle,
                detail=f"AUC/oracle {ratio:.3f} (minimum {policy.min_auc_to_oracle:.2f})",
            )
        )
    checks.append(
        GateCheck(
            name="calibration",
            passed=metrics.ece <= policy.max_ece,
            detail=f"ECE {metrics.ece:.4f} (maximum {policy.max_ece:.2f})",
        )
    )
    worst = largest_gap(slices, policy)
    checks.append(
        GateCheck(
            name="fairness_gap",
            passed=worst is None or worst.gap <= policy.max_fairness_gap,
            detail=(
                "no slice large enough to check"
                if worst is None
                else f"largest gap {worst.gap:.3f} in {worst.slice}={worst.value} "
                f"(maximum {policy.max_fairness_gap:.2f})"
            ),
        )
    )
    return checks
