"""The simulated world: deterministic, persona-driven, with a known reaction model."""

from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from feature_repo.categories import TIP_CATEGORIES
from flows.simulation.world import PERSONAS, World
from service.api.prompt_versions import RELEASED_PROMPT_VERSIONS
from service.events.models import ATTRIBUTION_WINDOW

END = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture(scope="module")
def world_events():
    world = World(users=40, days=21, seed=3, end=END)
    return world, list(world.events())


def test_same_seed_same_world_ids_included(world_events):
    _, events = world_events
    again = list(World(users=40, days=21, seed=3, end=END).events())
    assert [e.model_dump_json() for e in again] == [e.model_dump_json() for e in events]
    other = list(World(users=40, days=21, seed=4, end=END).events())
    assert [e.event_id for e in other] != [e.event_id for e in events]


def test_a_slice_of_users_is_that_part_of_the_whole(world_events):
    world, events = world_events
    part = list(world.events(range(10, 20)))
    assert part == [e for e in events if 10 <= int(e.user_id[1:]) < 20]


def test_event_ids_are_unique_and_events_stay_in_the_window(world_events):
    world, events = world_events
    assert len({e.event_id for e in events}) == len(events)
    assert all(world.start <= e.timestamp < END for e in events)


def test_personas_timezones_and_newcomers(world_events):
    world, _ = world_events
    assert len(PERSONAS) >= 4
    assert {u.persona for u in world.users} == {p.name for p in PERSONAS}
    assert len({u.timezone for u in world.users}) >= 5
    assert any(u.first_day > 0 for u in world.users) and any(u.first_day == 0 for u in world.users)


def test_impressions_carry_the_full_context_and_every_tip_gets_one_reaction(world_events):
    _, events = world_events
    impressions = [e for e in events if e.type == "impression"]
    reactions = Counter(e.tip_id for e in events if e.type == "feedback")
    # A reaction lands at most one attribution window later, unless that is past the end.
    settled = [i for i in impressions if i.timestamp < END - ATTRIBUTION_WINDOW]
    assert settled and all(reactions[i.tip_id] == 1 for i in settled)
    assert max(reactions.values()) == 1
    assert {i.category for i in impressions} == set(TIP_CATEGORIES)
    assert {i.prompt_version for i in impressions} == set(RELEASED_PROMPT_VERSIONS)
    assert all(i.context.timestamp == i.timestamp for i in impressions)
    assert any(i.context.tasks for i in impressions)
    # Every task in a snapshot was created before the impression and still open then.
    created = {e.task_id: e.timestamp for e in events if e.type == "task_created"}
    done = {e.task_id: e.timestamp for e in events if e.type == "task_completed"}
    for i in impressions[:200]:
        for task in i.context.tasks:
            assert created[task.id] <= i.timestamp < done.get(task.id, END + timedelta(days=1))


def test_reactions_follow_the_known_probability(world_events):
    _, events = world_events
    p = {e.tip_id: e.oracle_p_accept for e in events if e.type == "impression"}
    by_reaction: dict[str, list[float]] = {}
    for e in events:
        if e.type == "feedback":
            by_reaction.setdefault(e.reaction, []).append(p[e.tip_id])
    accepted = np.array(by_reaction["accepted"])
    others = np.array(by_reaction["dismissed"] + by_reaction["ignored"])
    # The accept rate matches the mean probability, and accepted tips had higher odds.
    rate = len(accepted) / (len(accepted) + len(others))
    assert rate == pytest.approx(np.mean(list(p.values())), abs=0.02)
    assert accepted.mean() > others.mean() + 0.05


@pytest.mark.parametrize(("users", "days"), [(0, 5), (5, 0)])
def test_empty_worlds_are_refused(users, days):
    with pytest.raises(ValueError, match="must be >= 1"):
        World(users=users, days=days, seed=1, end=END)
