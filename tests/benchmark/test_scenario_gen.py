"""Scenario set v2 (benchmark/scenario_gen.py): its file is the generator's output for its seed,
immutable, balanced over the grid, rendered by every prompt version, and its users' profiles
are the ones the simulated world's users of the same personas get from the feature pipeline."""

import time
from collections import Counter
from datetime import timedelta
from itertools import product
from zoneinfo import ZoneInfo

import pandas as pd
import pytest

from benchmark import scenario_gen
from benchmark.scenario_gen import (
    ESTABLISHED_TENURE_DAYS,
    HEAVY_OVERDUE,
    HEAVY_TASKS,
    LIGHT_TASKS,
    NEWCOMER_TENURE_DAYS,
    REFERENCE_DAY,
    TASK_TITLES,
    V2_GRID,
    V2_SEED,
    V2_SET_ID,
    Draws,
    ScenarioGrid,
    draw_user,
    generate_scenario_set,
    scenario_id,
    scenario_set_json,
    slot_of,
    store_profile,
)
from benchmark.scenarios import DEFAULT_SCENARIO_SET, Scenario, ScenarioSet, load_scenario_set
from feature_repo.categories import TIP_CATEGORIES
from feature_repo.personas import PERSONAS
from feature_repo.profile_features import PROFILE_FEATURES
from feature_repo.profile_transforms import EventFrames, compute_daily_profiles
from flows.simulation import world as simulator
from service.api.request import MAX_TITLE_CHARS
from service.generation.prompt_blocks import (
    MAX_PROMPT_TASKS,
    clean_title,
    mentions_fence,
    parse_facts,
)
from service.generation.prompts import PROMPTS, render
from tests.conftest import WORLD_END_TS

# Pinned: every benchmark run records its set's content hash, and judging refuses cells whose
# set no longer hashes the same. A new hash here is a new set (a new version), never an edit.
V1_HASH = "8d4eb7ff6718aa07eacb2558dbd27d08c331b2bdb52290b6762152c620bb9b2d"
V2_HASH = "baa58429574d00834ea4b33b76de68ee50c97b1c8f23ebaf7cfc993d4517a85a"
PERSONA_BY_NAME = {p.name: p for p in PERSONAS}


@pytest.fixture(scope="module")
def v2() -> ScenarioSet:
    return load_scenario_set(V2_SET_ID)


def cell_of(scenario: Scenario) -> tuple[str, int, str, int]:
    """(persona, hour, load, n) as the id spells them; the id's format is checked below."""
    *_, hour, load, n = scenario.id.split("-")
    return scenario.persona, int(hour), load, int(n)


def test_the_v2_file_is_the_generators_output_byte_for_byte_with_a_pinned_hash(v2):
    generated = generate_scenario_set(V2_SEED)
    written = scenario_gen.v2_path().read_text(encoding="ascii")
    assert written == scenario_set_json(generated), (
        f"{V2_SET_ID}.json is not generate_scenario_set({V2_SEED}): sets are immutable, "
        "make a new version instead of editing or regenerating this one"
    )
    assert generated.content_hash == v2.content_hash == V2_HASH
    assert load_scenario_set("tip-scenarios-v1").content_hash == V1_HASH
    assert DEFAULT_SCENARIO_SET == "tip-scenarios-v1"


def test_the_command_checks_the_file_and_rewrites_it(tmp_path, monkeypatch, capsys):
    shipped = scenario_gen.v2_path()
    copy = tmp_path / f"{V2_SET_ID}.json"
    copy.write_text(shipped.read_text().replace("never edit.", "edited.", 1))
    monkeypatch.setattr(scenario_gen, "v2_path", lambda: copy)
    assert scenario_gen.main([]) == 1
    assert scenario_gen.main(["--write"]) == 0
    assert scenario_gen.main([]) == 0
    assert copy.read_bytes() == shipped.read_bytes()
    assert "is up to date" in capsys.readouterr().out


def test_scenarios_depend_on_the_seed_and_their_own_id_only(v2):
    grid = ScenarioGrid(
        personas=("parent",), hours=(2, 21), loads=("heavy",), replicates=2, newcomers=1
    )
    part = generate_scenario_set(V2_SEED, grid)
    by_id = {s.id: s for s in v2.scenarios}
    assert len(part.scenarios) == grid.size == 4
    assert all(s == by_id[s.id] for s in part.scenarios)
    other = generate_scenario_set(V2_SEED + 1, grid)
    assert [s.id for s in other.scenarios] == [s.id for s in part.scenarios]
    assert all(a != b for a, b in zip(other.scenarios, part.scenarios, strict=True))


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"personas": ("night_owl_student", "ghost")}, "unknown personas"),
        ({"hours": (2, 17)}, "needs a usual and an off hour"),
        ({"hours": (8, 8, 21)}, "hours repeat"),
        ({"newcomers": 5}, "newcomers cannot exceed replicates"),
    ],
)
def test_malformed_grids_are_refused(change, reason):
    with pytest.raises(ValueError, match=reason):
        ScenarioGrid.model_validate(V2_GRID.model_dump() | change)


def test_every_cell_of_the_grid_holds_its_replicates_and_every_persona_both_slots(v2):
    assert len(v2.scenarios) == V2_GRID.size == 240
    cells = Counter(cell_of(s)[:3] for s in v2.scenarios)
    expected = product(V2_GRID.personas, V2_GRID.hours, V2_GRID.loads)
    assert cells == dict.fromkeys(expected, V2_GRID.replicates)
    for scenario in v2.scenarios:
        persona, hour, load, n = cell_of(scenario)
        assert scenario.id == scenario_id(V2_SET_ID, persona, hour, load, n)
        assert scenario.slot == slot_of(PERSONA_BY_NAME[persona], hour)
    slots = {(s.persona, s.slot) for s in v2.scenarios}
    assert slots == set(product(V2_GRID.personas, ("usual", "off")))
    # A cell's replicates ask for different categories, and the set for every one of them.
    by_cell: dict[tuple, list] = {}
    for scenario in v2.scenarios:
        by_cell.setdefault(cell_of(scenario)[:3], []).append(scenario.category)
    assert all(len(set(asked)) == len(asked) for asked in by_cell.values())
    assert {s.category for s in v2.scenarios} == {None, *TIP_CATEGORIES}


def test_loads_hours_and_days_are_what_the_context_features_read(v2):
    weekdays = set()
    for scenario in v2.scenarios:
        _, hour, load, _ = cell_of(scenario)
        features = scenario.feature_read().context
        context = scenario.context
        now, zone = context.timestamp, ZoneInfo(context.timezone)
        local_today = now.astimezone(zone).date()
        assert features["hour_of_day"] == hour
        assert REFERENCE_DAY - timedelta(days=6) <= local_today <= REFERENCE_DAY
        weekdays.add(features["day_of_week"])
        open_, overdue = features["open_task_count"], features["overdue_task_count"]
        due_later_today = [
            t
            for t in context.tasks
            if t.due and t.due > now and t.due.astimezone(zone).date() == local_today
        ]
        if load == "empty":
            assert open_ == 0
        elif load == "light":
            assert LIGHT_TASKS[0] <= open_ <= LIGHT_TASKS[1] and overdue == 0
        else:
            assert HEAVY_TASKS[0] <= open_ <= HEAVY_TASKS[1], scenario.id
            assert overdue >= HEAVY_OVERDUE and due_later_today, scenario.id
        titles = [t.title for t in context.tasks]
        assert len(set(titles)) == len(titles)
    assert weekdays == set(range(7))


def test_profiles_are_complete_within_bounds_and_null_only_for_new_users(v2):
    newcomers = Counter()
    for scenario in v2.scenarios:
        profile, n = scenario.profile, cell_of(scenario)[3]
        new = n <= V2_GRID.newcomers
        newcomers[cell_of(scenario)[:3]] += new
        assert list(profile) == [f.name for f in PROFILE_FEATURES]
        for feature in PROFILE_FEATURES:
            value = profile[feature.name]
            if value is None:
                assert new, f"{scenario.id}: {feature.name} is null for an established user"
                continue
            assert feature.minimum <= value <= feature.maximum, (scenario.id, feature.name)
            assert isinstance(value, int) == (feature.dtype == "int64")
        tenure = profile["tenure_days"]
        if not new:
            assert ESTABLISHED_TENURE_DAYS[0] <= tenure <= ESTABLISHED_TENURE_DAYS[1]
        elif tenure is None:  # joined today: no row, every feature falls back
            assert set(profile.values()) == {None}
            assert len(scenario.feature_read().fallbacks) == len(PROFILE_FEATURES)
        else:
            assert tenure <= NEWCOMER_TENURE_DAYS
        if tenure is not None:
            assert profile["overdue_tasks_eod"] <= profile["open_tasks_eod"]
            assert profile["streak_days"] <= tenure + 1
    assert set(newcomers.values()) == {V2_GRID.newcomers}
    tenures = [s.profile["tenure_days"] for s in v2.scenarios if cell_of(s)[3] == 1]
    assert None in tenures and 0 in tenures


def test_every_v2_scenario_renders_through_every_prompt_version(v2):
    started = time.monotonic()
    for scenario in v2.scenarios:
        context = scenario.prompt_context()
        assert len(context.tasks) == min(len(scenario.context.tasks), MAX_PROMPT_TASKS)
        assert context.facts.category == scenario.category
        for version in PROMPTS:
            messages = render(version, context)
            assert messages and all(m["content"].strip() for m in messages)
            user = messages[-1]["content"]
            assert context.facts_block() in user and context.tasks_block() in user
            assert parse_facts(user) == context.facts
    assert time.monotonic() - started < 10


def test_task_titles_are_harmless_and_cover_every_persona():
    for persona in PERSONAS:
        titles = [t for project in persona.projects for t in TASK_TITLES[project]]
        assert len(titles) >= HEAVY_TASKS[1], persona.name  # heavy lists never repeat one
    for title in (t for titles in TASK_TITLES.values() for t in titles):
        assert 0 < len(title) <= MAX_TITLE_CHARS
        assert clean_title(title) and not mentions_fence(title)
    assert not all(t.isascii() for titles in TASK_TITLES.values() for t in titles)


# --- the profiles against the simulator's -----------------------------------------------------


def _frame(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=columns)
    for column in {"created", "due", "timestamp"} & set(columns):
        frame[column] = pd.to_datetime(frame[column], utc=True)
    return frame


def _event_frames(events: list) -> EventFrames:
    by_type: dict[str, list] = {}
    for e in events:
        by_type.setdefault(e.type, []).append(e)
    return EventFrames(
        tasks=_frame(
            [
                (e.user_id, e.task_id, e.timestamp, e.due, e.timezone)
                for e in by_type["task_created"]
            ],
            ["user_id", "task_id", "created", "due", "timezone"],
        ),
        completions=_frame(
            [(e.user_id, e.task_id, e.timestamp) for e in by_type["task_completed"]],
            ["user_id", "task_id", "timestamp"],
        ),
        impressions=_frame(
            [
                (e.user_id, e.tip_id, e.timestamp, e.category, e.context.timezone)
                for e in by_type["impression"]
            ],
            ["user_id", "tip_id", "timestamp", "category", "timezone"],
        ),
        feedback=_frame(
            [(e.user_id, e.tip_id, e.timestamp, e.reaction) for e in by_type["feedback"]],
            ["user_id", "tip_id", "timestamp", "reaction"],
        ),
    )


def test_store_profile_gives_the_profiles_the_feature_pipeline_computes_for_the_world():
    """For each persona and feature, the generator's median user lies within the simulated
    users' 10-90% range and theirs within the generator's: the mapping in `store_profile`
    (and the simulator's constants it restates) still describe the world."""
    days = 35
    # 160 users: about 25 established ones per persona, enough for stable 10-90% ranges.
    world = simulator.World(users=160, days=days, seed=5, end=WORLD_END_TS)
    profiles = compute_daily_profiles(_event_frames(list(world.events())), [WORLD_END_TS.date()])
    established = {u.user_id: u.persona for u in world.users if u.first_day == 0}
    profiles = profiles[profiles["user_id"].isin(established)]
    names = [f.name for f in PROFILE_FEATURES]
    for persona in PERSONAS:
        ids = [u for u, p in established.items() if p == persona.name]
        simulated = profiles[profiles["user_id"].isin(ids)][names].astype(float)
        assert len(simulated) >= 15, persona.name
        draws = [Draws(f"check/{persona.name}/{i}") for i in range(200)]
        generated = pd.DataFrame(
            [store_profile(draw_user(persona, days - 1, d), d) for d in draws]
        )[names].astype(float)
        # Hours as signed offsets from the persona's: the student's wrap past midnight.
        for frame in (simulated, generated):
            offset = frame["preferred_hour"] - persona.active_hour
            frame["preferred_hour"] = (offset + 12) % 24 - 12
        for name in names:
            sim, gen = simulated[name], generated[name]
            assert sim.quantile(0.1) <= gen.median() <= sim.quantile(0.9), (persona.name, name)
            assert gen.quantile(0.1) <= sim.median() <= gen.quantile(0.9), (persona.name, name)
