"""Power of the benchmark's paired comparisons: what a design can detect, and what a difference
needs.

A comparison of two cells (benchmark/stats.py) is a sign-flip test on D_s, the two cells' mean
composite difference on scenario s, over S scenarios of K samples each. Its power is computed
as the paired t test's on the same D_s, assumed independent and normal with SD sd:

    T = mean(D) / (sd / sqrt(S)) ~ noncentral t(df = S - 1, nc = delta * sqrt(S) / sd)

and the minimum detectable difference (MDE) is the true difference delta whose power
P(|T| > t_{1 - a/2, S - 1}) is POWER, solved exactly rather than by the approximation
(t_{1 - a/2} + t_{power}) * sd / sqrt(S), which falls short of POWER with few scenarios and
small a (0.77 instead of 0.80 at S = 12, a = 0.05/36). statsmodels' TTestPower.solve_power
gives the same numbers; as S grows they tend to (z_{1 - a/2} + z_{power}) * sd / sqrt(S).

a is alpha / m in a family of m comparisons: Holm's first and strictest step, Bonferroni's
level. Holm rejects any p-value at most alpha / m whatever the others are, so the MDE holds
for every comparison of the family on its own; it is conservative, since later steps test at
alpha / (m - 1), ..., alpha.

Where the sign-flip test is not the t test:
- It cannot reject at all when its smallest p-value, 2 / 2**S (only the observed sign pattern
  and its mirror image that extreme), exceeds a. No difference is detectable then and the MDE
  is None: 10 scenarios and 36 comparisons is such a design (2/1024 > 0.05/36).
- Within a few multiples of that floor it rejects only when nearly every scenario favours one
  cell, and it is weaker than the t test: at 10 scenarios and a = 0.05/8 the MDE is detected
  about 73% of the time, not 80%. Far above the floor (14 scenarios, a = 0.05) they agree.
  tests/benchmark/test_bench_power.py measures both.
- Beyond 16 scenarios benchmark/stats.py samples sign patterns and its p-values cannot go
  below 1/(n_perm + 1), 1e-4 at its default; that is below a for up to 500 comparisons.

For planning, sd is split into what samples reduce and what they cannot:

    sd(K)**2 = scenario_sd**2 + item_sd**2 / K

scenario_sd: how much the two cells' true difference varies from scenario to scenario;
item_sd: the judge and sampling noise of one item pair's difference around it.
"""

import math
from functools import cache

from pydantic import BaseModel, ConfigDict, Field
from scipy.optimize import brentq
from scipy.stats import nct, t

ALPHA = 0.05  # significance level of every benchmark test, unless the caller sets another
POWER = 0.8  # the power every MDE and plan is computed for

# Between-scenario SD of the difference between two cells, in composite points. Measured: the
# rules-judge scoring the offline candidates on tip-scenarios-v1 gives 0.97 for every pair of
# the rules writer with a fixed-text baseline (the rest differ by a constant); rounded up.
DEFAULT_SCENARIO_SD = 1.0
# Per-item SD of one cell's composite around its scenario mean, from sampling and the judge.
# Offline candidates and the rules-judge are deterministic and show none, so it is a
# conservative guess: each 1-5 criterion an anchor level apart between samples (SD 1),
# criteria correlated 0.5 (a worse tip scores worse on all three): variance 3 + 6 * 0.5 = 6;
# plus format_ok, weight 2, failing in 1 answer in 20: 4 * 0.0475; SD 2.49, rounded up.
DEFAULT_ITEM_SD = 2.5
# How far a plan looks for the scenarios a difference needs; beyond, it says "more than".
_MAX_SEARCHED_SCENARIOS = 1_000_000


def is_significant(p_value: float, alpha: float) -> bool:
    """The benchmark's one rejection rule, p <= alpha, as flows/experiments' tests use."""
    return p_value <= alpha


def sign_flip_floor(n_scenarios: int) -> float:
    """Smallest two-sided p-value of the exact sign-flip test over n_scenarios scenarios."""
    return math.ldexp(1.0, 1 - n_scenarios)  # 2 / 2**n, 0.0 rather than an overflow past 1074


def reachable(n_scenarios: int, *, alpha: float = ALPHA, comparisons: int = 1) -> bool:
    """Whether the sign-flip test can reject at all at Holm's first step of the family.

    Written as Holm adjusts the smallest p-value, min(1, m * p), so that this agrees with the
    tests' own `significant` to the last bit.
    """
    return is_significant(min(1.0, comparisons * sign_flip_floor(n_scenarios)), alpha)


def _t_power(nc: float, df: int, critical: float) -> float:
    # The lower tail as the upper tail of -nc: nct.cdf(-c, df, nc) returns nan for large nc.
    return float(nct.sf(critical, df, nc) + nct.sf(critical, df, -nc))


@cache
def _detectable_nc(n_scenarios: int, level: float, power: float) -> float:
    """Noncentrality at which the two-sided one-sample t test at `level` has `power`."""
    df = n_scenarios - 1
    critical = float(t.ppf(1 - level / 2, df))
    # Power at nc = 0 is `level`, below `power`; the t approximation's noncentrality is near
    # the root, doubled until past it so that brentq has a bracket.
    high = critical + float(t.ppf(power, df))
    while _t_power(high, df, critical) < power:
        high *= 2
    return brentq(lambda nc: _t_power(nc, df, critical) - power, 0.0, high, xtol=1e-12)


def mde(
    sd: float,
    n_scenarios: int,
    *,
    alpha: float = ALPHA,
    power: float = POWER,
    comparisons: int = 1,
) -> float | None:
    """Minimum detectable difference of a paired comparison over n_scenarios scenarios.

    sd is the SD of the per-scenario mean differences (observed, or Noise.sd for a plan); the
    result is in its units, the same for either sign of the difference. None when nothing is
    detectable: fewer than two scenarios (no SD, no t test) or too few for the sign-flip test
    to reach alpha / comparisons. The module docstring has the formula and its assumptions.
    """
    if not (math.isfinite(sd) and sd >= 0):
        raise ValueError(f"sd must be finite and >= 0, got {sd}")
    if not (0 < alpha < power < 1 and comparisons >= 1):
        raise ValueError("need 0 < alpha < power < 1 and comparisons >= 1")
    if n_scenarios < 2 or not reachable(n_scenarios, alpha=alpha, comparisons=comparisons):
        return None
    nc = _detectable_nc(n_scenarios, alpha / comparisons, power)
    return nc * sd / math.sqrt(n_scenarios)


class Noise(BaseModel):
    """The two parts of the SD of a per-scenario mean difference between two cells."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario_sd: float = Field(
        ge=0, allow_inf_nan=False, description="SD over scenarios of the true difference"
    )
    item_sd: float = Field(
        ge=0,
        allow_inf_nan=False,
        description="SD of one item pair's difference around its scenario's true difference",
    )

    def sd(self, samples: int) -> float:
        """SD of the mean difference of `samples` item pairs of one scenario: samples average
        out the item part only."""
        return math.sqrt(self.scenario_sd**2 + self.item_sd**2 / samples)


# The two cells' items are independent draws, so their difference has sqrt(2) times the item
# noise of one; scenario_sd is already that of a difference.
DEFAULT_NOISE = Noise(scenario_sd=DEFAULT_SCENARIO_SD, item_sd=math.sqrt(2) * DEFAULT_ITEM_SD)


class Plan(BaseModel):
    """A design for detecting a difference: scenarios x samples per (model, prompt) cell."""

    model_config = ConfigDict(frozen=True)

    detect: float = Field(description="the difference asked for, in composite points")
    scenarios: int
    samples: int = Field(description="answers per cell and scenario")
    mde: float | None = Field(
        description="what this design detects; None when the test cannot reject at all"
    )
    feasible: bool = Field(description="mde <= detect within the caps")
    reason: str
    alpha: float
    power: float
    comparisons: int = Field(description="tests in the Holm family; a = alpha / comparisons")
    noise: Noise


def _fewest_scenarios(
    detect: float, sd: float, *, alpha: float, power: float, comparisons: int
) -> int | None:
    """Smallest scenario count whose MDE at this sd is at most detect; None beyond the search.

    The MDE never grows with the scenario count (the floor falls, t quantiles shrink, sqrt(S)
    grows), so a doubling search then bisection finds the boundary.
    """

    def enough(n: int) -> bool:
        found = mde(sd, n, alpha=alpha, power=power, comparisons=comparisons)
        return found is not None and found <= detect

    high = 2
    while not enough(high):
        if high >= _MAX_SEARCHED_SCENARIOS:
            return None
        high = min(2 * high, _MAX_SEARCHED_SCENARIOS)
    low = high // 2  # not enough, or 1, which never is
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def plan(
    detect: float,
    *,
    max_scenarios: int,
    max_samples: int,
    noise: Noise = DEFAULT_NOISE,
    alpha: float = ALPHA,
    power: float = POWER,
    comparisons: int = 1,
) -> Plan:
    """The cheapest design that detects `detect` with `power` at alpha / comparisons.

    Cheapest is fewest answers per cell, scenarios x samples, and then more scenarios, which
    reduce both parts of the noise where samples reduce only the item part. max_scenarios is
    what the scenario set has, max_samples what collect allows. When no design within them
    reaches detect, the plan is the largest one, feasible is False and the reason says how
    many scenarios would do (at max_samples) or why none can.
    """
    if not (math.isfinite(detect) and detect > 0):
        raise ValueError(f"detect must be a positive difference, got {detect}")
    if max_scenarios < 1 or max_samples < 1:
        raise ValueError("max_scenarios and max_samples must be at least 1")
    settings = {"alpha": alpha, "power": power, "comparisons": comparisons}
    level = f"alpha {alpha:g}" + (f"/{comparisons} (Holm's first step)" if comparisons > 1 else "")
    designs = [
        (scenarios * samples, -scenarios, samples, found)
        for scenarios in range(2, max_scenarios + 1)
        for samples in range(1, max_samples + 1)
        if (found := mde(noise.sd(samples), scenarios, **settings)) is not None and found <= detect
    ]
    if designs:
        answers, negative, samples, found = min(designs)
        return Plan(
            detect=detect,
            scenarios=-negative,
            samples=samples,
            mde=found,
            feasible=True,
            reason=f"{-negative} scenarios x {samples} samples ({answers} answers per cell) "
            f"detect {found:.2f}, within {detect:g}, with {power:.0%} power at {level}",
            noise=noise,
            **settings,
        )

    largest = mde(noise.sd(max_samples), max_scenarios, **settings)
    needed = _fewest_scenarios(detect, noise.sd(max_samples), **settings)
    needs = (
        f"{needed} scenarios would"
        if needed is not None
        else f"more than {_MAX_SEARCHED_SCENARIOS} scenarios would"
    )
    if largest is None:
        reason = (
            f"with {max_scenarios} scenarios the sign-flip test's smallest p-value, "
            f"{sign_flip_floor(max_scenarios):.2g}, cannot reach {level}: nothing is "
            f"detectable; at {max_samples} samples {needs}"
        )
    else:
        reason = (
            f"even {max_samples} samples on all {max_scenarios} scenarios detect only "
            f"{largest:.2f}, not {detect:g}, with {power:.0%} power at {level}; at "
            f"{max_samples} samples {needs}"
        )
    return Plan(
        detect=detect,
        scenarios=max_scenarios,
        samples=max_samples,
        mde=largest,
        feasible=False,
        reason=reason,
        noise=noise,
        **settings,
    )


class DesignCheck(BaseModel):
    """Whether a collect's design (scenarios x samples) can detect a difference, and the
    cheapest design that can."""

    model_config = ConfigDict(frozen=True)

    detect: float
    scenarios: int
    samples: int
    mde: float | None = Field(description="what this design detects; None: nothing")
    enough: bool
    cheapest: Plan


def check_design(
    detect: float,
    *,
    scenarios: int,
    samples: int,
    max_scenarios: int,
    max_samples: int,
    noise: Noise = DEFAULT_NOISE,
    alpha: float = ALPHA,
    power: float = POWER,
    comparisons: int = 1,
) -> DesignCheck:
    """`detect` against a design of `scenarios` x `samples`, with the `plan` within the caps
    (what the scenario set holds, what collect allows) beside it: asked before any LLM call."""
    found = mde(noise.sd(samples), scenarios, alpha=alpha, power=power, comparisons=comparisons)
    return DesignCheck(
        detect=detect,
        scenarios=scenarios,
        samples=samples,
        mde=found,
        enough=found is not None and found <= detect,
        cheapest=plan(
            detect,
            max_scenarios=max_scenarios,
            max_samples=max_samples,
            noise=noise,
            alpha=alpha,
            power=power,
            comparisons=comparisons,
        ),
    )
