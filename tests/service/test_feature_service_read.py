"""The serving read's planned one-row read gives what Feast's get_online_features gives.

Over a served home's real SQLite online store: any user (known, never seen, odd but valid
ids) and any request context (any zone, time in the accepted range, tasks with times, all-day
dues or none), every feature of the FeatureService, equal value for value.
"""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_repo.bounds import EARLIEST, LATEST, known_timezones
from feature_repo.cohort_features import COHORT_KEY
from feature_repo.feature_services import FEATURE_SERVICES, tip_scorer_v2
from feature_repo.feature_views import user_profile
from feature_repo.personas import PERSONAS
from flows.simulation.world import user_id
from service.api.request import RequestContext
from service.scoring.feature_service_read import FeatureServiceRead, UnsupportedFeatureService
from service.scoring.feature_store import open_store

ZONES = sorted(known_timezones())
WORLD_ZONES = sorted({zone for persona in PERSONAS for zone in persona.timezones})
USERS = st.one_of(
    st.integers(0, 199).map(user_id),  # the served world's users
    st.from_regex(r"[A-Za-z0-9._:@-]{1,40}", fullmatch=True),
)
TIMES = st.datetimes(
    min_value=EARLIEST.replace(tzinfo=None) + timedelta(days=2),
    max_value=LATEST.replace(tzinfo=None) - timedelta(days=2),
    timezones=st.just(UTC),
)


@st.composite
def contexts(draw: st.DrawFn) -> RequestContext:
    at = draw(st.one_of(TIMES, st.just(datetime.now(UTC))))
    zone = draw(st.sampled_from(ZONES))
    tasks = []
    for i in range(draw(st.integers(0, 6))):
        due = draw(
            st.one_of(
                st.none(),
                st.floats(-96, 96).map(lambda hours, at=at: at + timedelta(hours=hours)),
                st.integers(-3, 3).map(
                    lambda days, at=at, zone=zone: (
                        (at.astimezone(ZoneInfo(zone))).date() + timedelta(days=days)
                    )
                ),
            )
        )
        priority = draw(st.integers(1, 4))
        tasks.append(
            {"id": f"t{i}", "title": "x", "priority": priority, "due": due and due.isoformat()}
        )
    # Validated as a request body is: all-day dues become times in the request's zone.
    return RequestContext.model_validate(
        {"timestamp": at.isoformat(), "timezone": zone, "tasks": tasks}
    )


@pytest.fixture(scope="module")
def store(served_home):
    return open_store(served_home)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    user=USERS,
    context=contexts(),
    name=st.sampled_from([s.name for s in FEATURE_SERVICES]),
    # The zone of a world's user (a cohort with rows) as often as any other.
    cohort=st.one_of(st.sampled_from(WORLD_ZONES), st.sampled_from(ZONES)),
)
def test_one_row_equals_get_online_features(store, user, context, name, cohort):
    service = store.get_feature_service(name)
    request = context.feast_request_data()
    planned = FeatureServiceRead(store, service)
    entity = {"user_id": user, COHORT_KEY: cohort}
    got = planned.read_views(entity) | planned.compute_on_demand(request)

    keys = {k: entity[k] for k in planned.join_keys}
    expected = store.get_online_features(
        features=service, entity_rows=[{**keys, **request}]
    ).to_dict()
    names = [f.name for projection in service.feature_view_projections for f in projection.features]
    assert sorted(got) == sorted(names)
    assert {name: [value] for name, value in got.items()} == {
        name: expected[name] for name in names
    }


def test_known_users_and_zones_have_stored_values(store):
    planned = FeatureServiceRead(store, store.get_feature_service(tip_scorer_v2.name))
    known = planned.read_views({"user_id": user_id(3), COHORT_KEY: WORLD_ZONES[0]})
    assert all(value is not None for value in known.values())
    unknown = planned.read_views({"user_id": "never-seen", COHORT_KEY: "Etc/GMT+12"})
    assert set(unknown.values()) == {None}


def test_a_feature_service_it_cannot_plan_is_refused_naming_the_view(store):
    from feast import FeatureService

    renamed = FeatureService(
        name="renamed_keys", features=[user_profile.with_join_key_map({"user_id": "owner_id"})]
    )
    with pytest.raises(UnsupportedFeatureService, match="user_profile: renamed join keys"):
        FeatureServiceRead(store, renamed)
