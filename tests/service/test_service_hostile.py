"""The service under hostile input, in-process against a real Feast store and MLflow.

Each finding of the attack on the running service has its regression test here: far-dated
and edge-of-range times, zone directories, all-day due dates, unbounded profile values,
feedback with numbers for times and unknown prompt versions, and bad requests that must not
change what other requests get.
"""

from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_repo.profile_features import PROFILE_FEATURES
from service.events.lake import open_lake
from tests.feature_repo.test_bounds import FAR_TIMES, contexts
from tests.service.test_service import CANDIDATES, CONTEXT

NOW = datetime.now(UTC)
SCORE = {"user_id": "u000003", "candidates": CANDIDATES[:6], "context": CONTEXT}
GENERATE = {"user_id": "u000003", "context": CONTEXT}
FEEDBACK = {
    "event_id": "fb-hostile-1",
    "user_id": "u000003",
    "tip_id": "tip-1",
    "reaction": "accepted",
    "prompt_version": "v1",
    "timestamp": NOW.isoformat(),
}


def with_context(body: dict, **changes) -> dict:
    return body | {"context": CONTEXT | changes}


def one_task(**task) -> list[dict]:
    return [{"id": "t", "title": "Report", "priority": 1} | task]


def locs(response) -> list[list]:
    return [d["loc"] for d in response.json()["detail"]]


HOSTILE_CONTEXTS = [
    *((dict(timestamp=value), ["context", "timestamp"]) for value in FAR_TIMES),
    *((dict(tasks=one_task(due=value)), ["context", "tasks", 0, "due"]) for value in FAR_TIMES),
    *((dict(timezone=zone), ["context", "timezone"]) for zone in ["America", "Europe", "Etc"]),
    (dict(timestamp=1764236400), ["context", "timestamp"]),
]


@pytest.mark.parametrize("endpoint", ["/score", "/generate"])
@pytest.mark.parametrize(("changes", "loc"), HOSTILE_CONTEXTS)
def test_hostile_contexts_are_400s_naming_the_field(client, endpoint, changes, loc):
    body = SCORE if endpoint == "/score" else GENERATE
    response = client.post(endpoint, json=with_context(body, **changes))
    assert response.status_code == 400, response.text
    assert any(found[: len(loc)] == loc for found in locs(response)), locs(response)


@pytest.mark.parametrize("endpoint", ["/score", "/generate"])
def test_an_all_day_due_date_is_valid_input(client, endpoint):
    body = SCORE if endpoint == "/score" else GENERATE
    today = NOW.astimezone().date().isoformat()
    response = client.post(endpoint, json=with_context(body, tasks=one_task(due=today)))
    assert response.status_code == 200, response.text
    assert response.json()["degraded"] is False


BAD_PROFILES = [
    ({"completion_rate_7d": 1.5}, "completion_rate_7d"),
    ({"tip_accept_rate_28d": -0.1}, "tip_accept_rate_28d"),
    ({"tips_shown_7d": -3}, "tips_shown_7d"),
    ({"tips_shown_7d": True}, "tips_shown_7d"),
    ({"streak_days": 2.5}, "streak_days"),
    ({"preferred_hour": 24}, "preferred_hour"),
]


@pytest.mark.parametrize("endpoint", ["/score", "/generate"])
@pytest.mark.parametrize(("profile", "field"), BAD_PROFILES)
def test_score_and_generate_hold_profile_values_to_the_same_ranges(
    client, endpoint, profile, field
):
    body = (SCORE if endpoint == "/score" else GENERATE) | {"profile_features": profile}
    response = client.post(endpoint, json=body)
    assert response.status_code == 400, response.text
    assert ["profile_features", field] in locs(response)


@pytest.mark.parametrize("endpoint", ["/score", "/generate"])
@pytest.mark.parametrize("token", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_profile_values_are_400s(client, endpoint, token):
    body = b'{"user_id": "u000003", "context": {"timestamp": "%s", "timezone": "UTC"}, ' % (
        NOW.isoformat().encode()
    )
    if endpoint == "/score":
        body += b'"candidates": [{"tip_id": "a", "category": "focus"}], '
    body += b'"profile_features": {"completion_rate_7d": %s}}' % token
    response = client.post(endpoint, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert ["profile_features", "completion_rate_7d"] in locs(response)


@pytest.mark.parametrize(
    ("changes", "status", "loc"),
    [
        ({"timestamp": 1764236400}, 400, ["timestamp"]),
        ({"timestamp": "2300-01-01T00:00:00+00:00"}, 400, ["timestamp"]),
        ({"timestamp": "9999-12-31T23:59:59-12:00"}, 400, ["timestamp"]),
        ({"prompt_version": "v9-shiny"}, 422, ["prompt_version"]),
    ],
)
def test_feedback_that_would_poison_the_log_is_refused_and_not_stored(
    client, served_home, changes, status, loc
):
    event = FEEDBACK | {"event_id": f"fb-refused-{abs(hash(str(changes)))}"} | changes
    response = client.post("/feedback", json=event)
    assert response.status_code == status, response.text
    assert loc in locs(response)
    log = open_lake(served_home)
    assert event["event_id"] not in {r["event_id"] for r in log.records()}
    assert not log.skipped


def test_bad_requests_change_neither_the_breaker_nor_other_answers(client):
    good = client.post("/score", json=SCORE).json()
    bad_bodies = [
        with_context(SCORE, tasks=one_task(due="9999-12-31T23:59:59-12:00")),
        with_context(SCORE, timezone="America"),
        with_context(SCORE, timestamp="0001-01-01T00:00:00+00:00"),
        SCORE | {"profile_features": {"completion_rate_7d": 7}},
    ]
    for _ in range(5):
        for bad in bad_bodies:
            assert client.post("/score", json=bad).status_code == 400
            assert client.post("/generate", json=bad | {"candidates": None}).status_code == 400
            answer = client.post("/score", json=SCORE).json()
            assert answer["degraded"] is False and answer["dependency_fallbacks"] == {}
            assert answer["candidates"] == good["candidates"]
    assert "tipml_dependency_fallbacks_total{" not in client.get("/metrics").text


hostile_bodies = st.fixed_dictionaries(
    {"user_id": st.just("u000003") | st.text(max_size=8), "context": contexts},
    optional={
        "candidates": st.just(CANDIDATES[:2]),
        "profile_features": st.dictionaries(
            st.sampled_from([f.name for f in PROFILE_FEATURES]),
            st.none() | st.booleans() | st.integers() | st.floats(),
            max_size=3,
        ),
        "experiment": st.sampled_from(["prompt-ab", "prompt-bandit", "nope", ""]),
        "prompt_version": st.sampled_from(["v1", "v9", "", "V1"]),
        "category": st.sampled_from(["focus", "gardening", ""]),
    },
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=hostile_bodies)
def test_hostile_bodies_are_answered_or_refused_never_a_server_error(client, body):
    for endpoint in ("/score", "/generate", "/feedback"):
        response = client.post(endpoint, json=body)
        assert response.status_code < 500, (endpoint, response.text)
        if response.status_code == 200 and endpoint != "/feedback":
            assert response.json()["dependency_fallbacks"] == {}
