"""Prompt experiments: config, assignment, propensities, bandit state and the update flow."""

import math
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import redis
from pydantic import ValidationError
from scipy.stats import chisquare

from flows.bandit_update import bandit_update
from flows.experiments.report import experiment_report
from flows.simulation.world import PROMPT_EFFECT
from service.events.lake import open_lake
from service.events.models import ATTRIBUTION_WINDOW, EVENT_ADAPTER, Decision, Feedback
from service.experiments.assignment import arm_probabilities, decide, decision_event
from service.experiments.bandit_state import (
    ArmState,
    Batch,
    ExperimentState,
    RedisBanditStore,
    Reward,
    SqliteBanditStore,
    StateCache,
    open_bandit_store,
)
from service.experiments.config import Experiment, ExperimentsConfig, Guardrails, UnknownExperiment
from tests.conftest import require_server

CONFIG = ExperimentsConfig.from_yaml()
BANDIT = CONFIG.active("prompt-bandit")
AB = CONFIG.active("prompt-ab")
ARMS = ("v1", "v2-mentor", "v3-few-shot")


def variant(experiment: Experiment, **changes) -> Experiment:
    return Experiment.model_validate(experiment.model_dump(exclude_unset=True) | changes)


def state(
    *counts: tuple[int, int],
    paused: tuple[str, ...] = (),
    revision: int = 7,
    experiment: str = BANDIT.id,
) -> ExperimentState:
    """Exposures and rewards per arm, in ARMS order."""
    return ExperimentState(
        experiment=experiment,
        revision=revision,
        arms={
            arm: ArmState(exposures=n, rewards=k, pause_reason="test" if arm in paused else None)
            for arm, (n, k) in zip(ARMS, counts, strict=True)
        },
    )


LEARNED = state((600, 130), (600, 160), (600, 175))


def test_the_shipped_experiments():
    assert (BANDIT.policy, BANDIT.arms, BANDIT.control) == ("thompson", ARMS, "v1")
    assert AB.policy == "weighted"
    assert AB.weights == {"v1": 0.5, "v2-mentor": 0.25, "v3-few-shot": 0.25}
    # The shipped limits are the defaults, which also judge experiments nobody configured.
    assert BANDIT.guardrails == AB.guardrails == Guardrails()
    # A limit left out gets its default; null turns it off.
    relaxed = variant(AB, guardrails={"max_p95_latency_ms": None, "min_decisions": 50})
    assert relaxed.guardrails == Guardrails(max_p95_latency_ms=None, min_decisions=50)
    assert relaxed.guardrails.max_dismiss_rate == 0.5
    with pytest.raises(UnknownExperiment, match="unknown experiment 'nope'; active: prompt-b"):
        CONFIG.active("nope")
    parked = ExperimentsConfig(experiments=(variant(AB, active=False),))
    with pytest.raises(UnknownExperiment, match="not active"):
        parked.active("prompt-ab")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"arms": ["v1", "v9"]}, "unknown prompt version 'v9'; known versions: v1, v2-mentor"),
        ({"arms": ["v1", "v1"], "weights": {"v1": 1.0}}, "arms must be distinct"),
        ({"control": "v9"}, "control 'v9' is not one of the arms"),
        ({"weights": None}, "policy 'weighted' needs weights"),
        ({"weights": {"v1": 0.5, "v2-mentor": 0.5}}, "weights must name exactly the arms"),
        ({"weights": {"v1": 0.5, "v2-mentor": 0.3, "v3-few-shot": 0.3}}, "sum to 1.1, not 1"),
        ({"weights": {"v1": 0.33333, "v2-mentor": 0.33333, "v3-few-shot": 0.33334}}, "multiples"),
        ({"policy": "fixed"}, "fixed gives one arm weight 1"),
        ({"epsilon": 0.1}, "epsilon is required for epsilon_greedy and only for it"),
        ({"floor": 0.05}, "floor and min_exposures apply to epsilon_greedy and thompson only"),
        ({"id": "a:b"}, "String should match pattern"),
        ({"salt": "a.b"}, "String should match pattern"),
        ({"bucket_version": 0}, "greater than 0"),
        ({"guardrails": {"max_dismiss_rate": 1.5}}, "less than or equal to 1"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_config_errors_name_the_problem(changes, message):
    with pytest.raises(ValidationError, match=message):
        variant(AB, **changes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"policy": "epsilon_greedy"}, "epsilon is required"),
        ({"floor": 0.0}, "thompson needs floor > 0"),
        ({"floor": 0.4}, r"floor 0.4 \* 3 arms exceeds 1"),
        ({"weights": {"v1": 0.99, "v2-mentor": 0.01, "v3-few-shot": 0.0}}, "positive and >= fl"),
    ],
)
def test_bandit_config_errors(changes, message):
    with pytest.raises(ValidationError, match=message):
        variant(BANDIT, **changes)


def test_ids_and_salts_are_unique():
    with pytest.raises(ValidationError, match=r"experiment ids must be unique, repeated: \['p"):
        ExperimentsConfig(experiments=(AB, variant(AB, salt="other")))
    with pytest.raises(ValidationError, match="experiment salts must be unique"):
        ExperimentsConfig(experiments=(AB, variant(AB, id="other")))


def test_weighted_buckets_are_uniform_sticky_and_exact():
    users = [f"u{i:06d}" for i in range(20_000)]
    empty = ExperimentState(experiment=AB.id)
    first = [decide(AB, u, f"r1-{u}", empty) for u in users]
    counts = Counter(a.arm for a in first)
    expected = [AB.weights[arm] * len(users) for arm in ARMS]
    assert chisquare([counts[arm] for arm in ARMS], expected).pvalue > 0.001
    assert all(a.propensity == AB.weights[a.arm] and a.probabilities == AB.weights for a in first)
    # Sticky: another request, or another revision of the state, keeps every user's arm.
    later = ExperimentState(experiment=AB.id, revision=3)
    assert [decide(AB, u, f"r2-{u}", later).arm for u in users] == [a.arm for a in first]
    # A new bucket_version re-randomizes: a user keeps the arm with probability sum(w^2).
    bumped = variant(AB, bucket_version=2)
    moved = sum(
        decide(bumped, u, "r", empty).arm != a.arm for u, a in zip(users, first, strict=True)
    )
    stay = sum(w * w for w in AB.weights.values())
    assert abs(moved / len(users) - (1 - stay)) < 0.02


def test_a_paused_sticky_arm_moves_only_its_own_users():
    users = [f"u{i:06d}" for i in range(20_000)]
    before = {u: decide(AB, u, "r", ExperimentState(experiment=AB.id)).arm for u in users}
    paused = state((0, 0), (0, 0), (0, 0), paused=("v2-mentor",), experiment=AB.id)
    after = {u: decide(AB, u, "r", paused) for u in users}
    assert arm_probabilities(AB, paused, "u") == {
        "v1": 2 / 3,
        "v2-mentor": 0.0,
        "v3-few-shot": 1 / 3,
    }
    assert all(after[u].arm == arm for u, arm in before.items() if arm != "v2-mentor")
    moved = Counter(after[u].arm for u, arm in before.items() if arm == "v2-mentor")
    assert abs(moved["v1"] / moved.total() - 2 / 3) < 0.03 and "v2-mentor" not in moved
    # The control is never paused: a fixed rollout whose arm is paused goes back to it.
    rollout = variant(AB, policy="fixed", weights={"v1": 0, "v2-mentor": 1, "v3-few-shot": 0})
    assert decide(rollout, "u1", "r", state((0, 0), (0, 0), (0, 0), experiment=AB.id)).arm == (
        "v2-mentor"
    )
    assert decide(rollout, "u1", "r", paused).arm == "v1"
    with pytest.raises(ValueError, match="the state of 'prompt-bandit' is not 'prompt-ab'"):
        decide(AB, "u1", "r", LEARNED)


def test_bandits_use_the_weights_until_every_live_arm_has_min_exposures():
    warm = variant(BANDIT, weights={"v1": 0.6, "v2-mentor": 0.2, "v3-few-shot": 0.2})
    n = BANDIT.min_exposures
    assert arm_probabilities(warm, state((n, 50), (n, 50), (n - 1, 90)), "u") == warm.weights
    assert arm_probabilities(BANDIT, state((n, 5), (n, 9), (0, 0)), "u") == {
        arm: 1 / 3 for arm in ARMS
    }
    # A paused arm with few exposures does not hold the others in warm-up.
    learned = arm_probabilities(
        BANDIT, state((n, 5), (n, 50), (0, 0), paused=("v3-few-shot",)), "u"
    )
    assert learned["v3-few-shot"] == 0.0 and learned["v2-mentor"] > 0.9


def test_epsilon_greedy_propensities_are_exact_and_replayable():
    greedy = variant(BANDIT, policy="epsilon_greedy", epsilon=0.1)
    explore = greedy.floor + (1 - 3 * greedy.floor) * greedy.epsilon / 3
    expected = {"v1": explore, "v2-mentor": explore, "v3-few-shot": 1 - 2 * explore}
    probabilities = arm_probabilities(greedy, LEARNED, "u")
    assert probabilities == pytest.approx(expected, abs=1e-12)
    decisions = [decide(greedy, "u", f"req-{i}", LEARNED) for i in range(20_000)]
    counts = Counter(d.arm for d in decisions)
    for arm, p in expected.items():
        assert abs(counts[arm] / len(decisions) - p) < 4 * math.sqrt(p * (1 - p) / len(decisions))
    assert all(d.propensity == probabilities[d.arm] for d in decisions)
    assert all(decide(greedy, "u", f"req-{i}", LEARNED) == decisions[i] for i in range(50))


def test_thompson_monte_carlo_propensity_matches_how_often_decide_picks_each_arm():
    probabilities = arm_probabilities(BANDIT, LEARNED, "u")
    decisions = [decide(BANDIT, f"u{i}", f"req-{i}", LEARNED) for i in range(20_000)]
    counts = Counter(d.arm for d in decisions)
    for arm in ARMS:
        assert abs(counts[arm] / len(decisions) - probabilities[arm]) < 0.03
    assert all(d.propensity == probabilities[d.arm] for d in decisions)
    assert decisions[0].policy_version == "prompt-bandit:thompson:r7"
    # Replayable: the same request under the same state gets the same arm.
    assert decide(BANDIT, "u0", "req-0", LEARNED) == decisions[0]


@pytest.mark.parametrize("policy", ["thompson", "epsilon_greedy"])
def test_probabilities_sum_to_one_and_respect_the_floor(policy):
    experiment = variant(
        BANDIT, policy=policy, **({"epsilon": 0.05} if policy != "thompson" else {})
    )
    rng = np.random.default_rng(3)
    for revision in range(40):
        exposures = rng.integers(BANDIT.min_exposures, 5000, size=3)
        rewards = (exposures * rng.beta(1, 3, size=3)).astype(int)
        paused = ("v2-mentor",) if revision % 4 == 0 else ()
        current = state(*zip(exposures, rewards, strict=True), paused=paused, revision=revision)
        p = arm_probabilities(experiment, current, "u")
        assert sum(p.values()) == pytest.approx(1.0, abs=1e-9)
        for arm in ARMS:
            assert p[arm] == 0.0 if arm in paused else p[arm] >= BANDIT.floor - 1e-12


def test_thompson_finds_the_best_prompt_in_the_simulated_world(tmp_path):
    """Rewards drawn with the world's true prompt effects, state updated every 500 requests."""
    true_p = {arm: 1 / (1 + math.exp(1.2 - effect)) for arm, effect in PROMPT_EFFECT.items()}
    store = SqliteBanditStore(tmp_path / "state.sqlite")
    rng = np.random.default_rng(11)
    current, pending, arms = store.read(BANDIT.id), [], []
    for i in range(20_000):
        arm = decide(BANDIT, f"u{i % 3000}", f"sim-{i}", current).arm
        arms.append(arm)
        pending.append(Reward(tip_id=f"sim-{i}", arm=arm, reward=int(rng.random() < true_p[arm])))
        if len(pending) == 500:
            current = store.apply(Batch(experiment=BANDIT.id, rewards=tuple(pending))).state
            pending = []
    assert current.revision == 40
    assert Counter(arms[-2000:])["v3-few-shot"] / 2000 > 0.7


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.integration)])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield SqliteBanditStore(tmp_path / "state.sqlite")
        return
    require_server("Redis", "127.0.0.1", 6379)
    prefix = f"tipml-test:{uuid.uuid4().hex}:"
    yield RedisBanditStore("127.0.0.1:6379", prefix=prefix)
    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)


def rewards(*spec: tuple[str, str, int]) -> tuple[Reward, ...]:
    return tuple(Reward(tip_id=t, arm=a, reward=r) for t, a, r in spec)


def test_a_batch_counts_each_tip_once_atomically(store):
    at = datetime(2026, 11, 20, 12, tzinfo=UTC)
    batch = Batch(
        experiment="exp",
        rewards=rewards(("t1", "v1", 1), ("t2", "v1", 0), ("t3", "v2-mentor", 1), ("t1", "v1", 1)),
        pauses={"v2-mentor": "too slow"},
        watermark=at,
    )
    first = store.apply(batch)
    assert (first.counted, first.duplicates) == (3, 1)
    assert first.state.revision == 1 and first.state.watermark == at
    assert first.state.arm("v1") == ArmState(exposures=2, rewards=1)
    assert first.state.arm("v2-mentor") == ArmState(exposures=1, rewards=1, pause_reason="too slow")
    again = store.apply(batch)
    assert (again.counted, again.duplicates, again.state) == (0, 4, first.state)
    assert store.read("exp") == first.state

    # Overlap: only new tips count; an earlier watermark and a second pause reason change nothing.
    mixed = Batch(
        experiment="exp",
        rewards=rewards(("t3", "v2-mentor", 1), ("t4", "v3-few-shot", 1)),
        pauses={"v2-mentor": "other reason"},
        watermark=at - timedelta(hours=1),
    )
    after = store.apply(mixed).state
    assert after.revision == 2 and after.watermark == at
    assert after.arm("v3-few-shot") == ArmState(exposures=1, rewards=1)
    assert after.arm("v2-mentor").pause_reason == "too slow"
    resumed = store.apply(Batch(experiment="exp", pauses={"v2-mentor": None})).state
    assert resumed.revision == 3 and not resumed.arm("v2-mentor").paused
    assert store.read("other") == ExperimentState(experiment="other")


def test_the_state_cache_rereads_after_its_ttl(tmp_path):
    store = SqliteBanditStore(tmp_path / "state.sqlite")
    cache = StateCache(store, ttl_seconds=1.0)
    assert cache.get("exp").state.revision == 0
    store.apply(Batch(experiment="exp", rewards=rewards(("t1", "v1", 1))))
    assert cache.get("exp").state.revision == 0
    time.sleep(1.05)
    assert cache.get("exp") == (store.read("exp"), None)


def test_the_decision_event_carries_the_assignment():
    assignment = decide(BANDIT, "u1", "req-1", LEARNED)
    event = decision_event(
        assignment, request_id="req-1", user_id="u1", outcome="fallback", latency_ms=812.5
    )
    assert EVENT_ADAPTER.validate_json(event.model_dump_json()) == event
    assert (event.tip_id, event.arm, event.propensity) == (
        "req-1",
        assignment.arm,
        assignment.propensity,
    )
    assert (event.experiment, event.policy_version) == (BANDIT.id, "prompt-bandit:thompson:r7")
    other = decision_event(assignment, request_id="req-1", user_id="u1", outcome="ok", latency_ms=1)
    assert other.event_id != event.event_id


def _decision(tip: str, arm: str, at: datetime, outcome: str = "ok", latency_ms: float = 300.0):
    return Decision(
        event_id=f"d-{tip}",
        user_id="u1",
        timestamp=at,
        request_id=tip,
        tip_id=tip,
        experiment=BANDIT.id,
        arm=arm,
        propensity=0.5,
        policy="thompson",
        policy_version=f"{BANDIT.id}:thompson:r0",
        outcome=outcome,
        latency_ms=latency_ms,
    )


def _feedback(tip: str, reaction: str, at: datetime) -> Feedback:
    return Feedback(
        event_id=f"f-{tip}",
        user_id="u1",
        timestamp=at,
        tip_id=tip,
        reaction=reaction,
        prompt_version="v1",
    )


@pytest.mark.usefixtures("prefect_server")
def test_the_update_flow_counts_settled_decisions_once_and_pauses_a_breaching_arm(settings):
    now = datetime.now(UTC)
    old, recent = now - 2 * ATTRIBUTION_WINDOW, now - ATTRIBUTION_WINDOW / 6
    slow = 2 * BANDIT.guardrails.max_p95_latency_ms
    events = []
    # Control: 120 settled (30 accepted, 20 dismissed, 70 silent), all slow: never paused.
    for i in range(120):
        events.append(_decision(f"c{i}", "v1", old, latency_ms=slow))
        if i < 50:
            reaction = "accepted" if i < 30 else "dismissed"
            events.append(_feedback(f"c{i}", reaction, old + timedelta(minutes=3)))
    # v2-mentor: 120 decisions, 10 failed (an error rate over the limit), the rest silent.
    events += [
        _decision(f"m{i}", "v2-mentor", old, outcome="error" if i < 10 else "ok")
        for i in range(120)
    ]
    # v3-few-shot: 40 accepted; 5 recent accepted; 10 recent silent (pending, their window is
    # open); 1 accepted only after its window closed (counts as 0).
    for i in range(40):
        events += [_decision(f"a{i}", "v3-few-shot", old), _feedback(f"a{i}", "accepted", old)]
    for i in range(5):
        answered = recent + timedelta(minutes=2)
        events += [
            _decision(f"r{i}", "v3-few-shot", recent),
            _feedback(f"r{i}", "accepted", answered),
        ]
    events += [_decision(f"p{i}", "v3-few-shot", recent) for i in range(10)]
    late = old - timedelta(minutes=1)
    events += [_decision("late", "v3-few-shot", late), _feedback("late", "accepted", recent)]
    open_lake(settings).append(events)

    report = {e.experiment: e for e in bandit_update(settings).experiments}[BANDIT.id]
    assert (report.counted, report.already_counted, report.pending) == (276, 0, 10)
    arms = {a.arm: a for a in report.arms}
    assert [(arms[a].exposures, arms[a].rewards) for a in ARMS] == [(120, 30), (110, 0), (46, 45)]
    assert arms["v1"].dismiss_rate == pytest.approx(20 / 120)
    assert arms["v2-mentor"].llm_error_rate == pytest.approx(10 / 120)
    assert (
        report.paused == ["v2-mentor"]
        and report.newly_paused["v2-mentor"]
        == "LLM error rate 0.083 > 0.05 over 120 decisions in 7 days"
    )
    assert arms["v1"].p95_latency_ms == slow and arms["v1"].pause_reason is None
    # `tipml experiments report` shows the verdicts the flow acted on, judged the same way.
    shown = {e.experiment: e for e in experiment_report(settings).experiments}[BANDIT.id]
    assert shown.limits == BANDIT.guardrails and shown.control == BANDIT.control
    for a in shown.arms:
        assert (a.guardrail.decisions, a.guardrail.dismiss_rate, a.guardrail.llm_error_rate) == (
            arms[a.arm].decisions,
            arms[a.arm].dismiss_rate,
            arms[a.arm].llm_error_rate,
        )
        assert (a.guardrail.action == "pause") == (a.arm in report.newly_paused)
    assert shown.arms[0].guardrail.breaches == [f"p95 latency {slow:.0f} ms > 6000 ms"]  # control

    again = {e.experiment: e for e in bandit_update(settings).experiments}[BANDIT.id]
    assert (again.counted, again.already_counted, again.pending) == (0, 276, 10)
    assert again.revision == report.revision and again.newly_paused == {}
    stored = open_bandit_store(settings).read(BANDIT.id)
    assert stored.watermark == recent  # the oldest decision still pending
    live = arm_probabilities(BANDIT, stored, "u1")
    assert live["v2-mentor"] == 0.0 and sum(live.values()) == pytest.approx(1.0)
