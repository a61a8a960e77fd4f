"""Scenario set v2: the simulated world's personas at fixed local hours under fixed task loads.

What it is for: v1's ten hand-written scenarios rank models only roughly. v2 is large enough
(V2_GRID.size scenarios) for paired comparisons of models and prompt versions to have power,
and balanced: every persona meets every hour and every task load equally often, so their
effects can be told apart rather than averaged over.

How a scenario is made (`generate_scenario_set`), for one cell (persona, hour, load) of the
grid and one replicate of it:
- who: a user of one of the world's personas (feature_repo/personas.py, the parameters the
  simulator draws its users from), in one of the persona's time zones, with a preferred hour,
  base logit and receptivities jittered around the persona's as the simulator jitters its
  users; the first `newcomers` replicates of each cell are new users (0-6 days of history, or
  none at all);
- the profile: what the online store would hold for that user (`store_profile`: the persona's
  rates turned into the counts the store's windows hold; every PROFILE_FEATURES name, null
  where a new user has no value yet);
- when: the grid hour, local, at a drawn minute on one of the seven days ending REFERENCE_DAY
  (so every weekday occurs); the slot is "usual" when the hour is within one standard
  deviation of the persona's active hour, else "off";
- the tasks: none ("empty"); 1-3, none overdue ("light"); 8-12 with at least 2 overdue and one
  due later that day ("heavy"). Titles come from a fixed, harmless vocabulary per project
  (some with accents, other scripts, emoji and look-alike letters, which the prompt code must
  clean and fence), priorities are drawn with the persona's weights;
- the category asked for: none or one of the tip categories, rotating within the cell from a
  drawn start, so a cell's replicates ask for different ones.

Guarantees:
- Deterministic from the seed alone: no wall clock, and no random source but
  `random.Random(str).random()`, the one stream Python promises to keep across versions;
  every other draw (`Draws`) is built on it here.
- Each scenario draws from its own stream, seeded by (seed, scenario id): a grid with more
  hours or replicates adds scenarios and leaves the others as they were.
- benchmark/scenarios/tip-scenarios-v2.json is `generate_scenario_set(V2_SEED)` as
  `scenario_set_json` writes it, and is immutable like v1 (every benchmark run records the
  set's content hash): a test regenerates it byte for byte and pins its hash. A change here,
  in the grid or in the personas that changes the output makes a new set (v3), not a new v2.

`python -m benchmark.scenario_gen` checks that the file is up to date (exit 1 if not);
`python -m benchmark.scenario_gen --write` (re)writes it.
"""

import argparse
import json
import math
import random
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from statistics import NormalDist
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, model_validator

from benchmark.scenarios import SCENARIO_DIR, Scenario, ScenarioSet
from feature_repo.categories import TIP_CATEGORIES
from feature_repo.personas import PERSONAS, Persona
from feature_repo.profile_features import PROFILE_FEATURES
from feature_repo.profile_transforms import RATE_PSEUDO_COUNT, WINDOW_DAYS
from service.api.request import RequestContext, Task

Load = Literal["empty", "light", "heavy"]
Due = Literal["none", "overdue", "today", "later"]  # "today": later on the request's day
Slot = Literal["usual", "off"]
Profile = dict[str, float | int | None]

_PERSONAS = {p.name: p for p in PERSONAS}
T = TypeVar("T")


def slot_of(persona: Persona, hour: int) -> Slot:
    """Usual within one standard deviation of the persona's active hour (circularly), else off."""
    gap = abs(hour - persona.active_hour) % 24
    return "usual" if min(gap, 24 - gap) <= persona.active_hour_sd else "off"


class ScenarioGrid(BaseModel):
    """The cells of a set (persona x local hour x task load) and the scenarios per cell."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    personas: tuple[str, ...] = Field(min_length=1, description="names in PERSONAS")
    hours: tuple[int, ...] = Field(min_length=1, description="local hours of the day")
    loads: tuple[Load, ...] = Field(min_length=1)
    replicates: int = Field(ge=1, description="scenarios per cell")
    newcomers: int = Field(ge=0, description="of a cell's replicates, how many are new users")

    @model_validator(mode="after")
    def _well_formed(self) -> "ScenarioGrid":
        for name, values in (
            ("personas", self.personas),
            ("hours", self.hours),
            ("loads", self.loads),
        ):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} repeat: {values}")
        if unknown := sorted(set(self.personas) - _PERSONAS.keys()):
            raise ValueError(f"unknown personas {unknown}; known: {sorted(_PERSONAS)}")
        if not all(0 <= h <= 23 for h in self.hours):
            raise ValueError(f"hours must be 0-23: {self.hours}")
        if self.newcomers > self.replicates:
            raise ValueError("newcomers cannot exceed replicates")
        for name in self.personas:
            slots = {slot_of(_PERSONAS[name], h) for h in self.hours}
            if slots != {"usual", "off"}:
                raise ValueError(f"{name} needs a usual and an off hour among {self.hours}")
        return self

    @property
    def size(self) -> int:
        return len(self.personas) * len(self.hours) * len(self.loads) * self.replicates


V2_SET_ID = "tip-scenarios-v2"
V2_SEED = 20261120
# 4 personas x 5 hours x 3 loads x 4 replicates = 240 scenarios. 21:00 is usual for the
# student and the parent, 08:00 for the manager and the freelancer, 12:00 for the freelancer;
# 02:00 and 17:00 are off hours for all four.
V2_GRID = ScenarioGrid(
    personas=("night_owl_student", "busy_manager", "freelancer", "parent"),
    hours=(2, 8, 12, 17, 21),
    loads=("empty", "light", "heavy"),
    replicates=4,
    newcomers=1,
)
# The last local day a scenario can fall on: the day before the world end the tests use
# (2026-11-20), so scenarios sit where the simulated data does.
REFERENCE_DAY = date(2026, 11, 19)

LIGHT_TASKS = (1, 3)
HEAVY_TASKS = (8, 12)
HEAVY_OVERDUE = 2  # at least, and at least one task due later the same day
ESTABLISHED_TENURE_DAYS = (WINDOW_DAYS, 120)  # full windows, a few months of history
NEWCOMER_TENURE_DAYS = 6  # at most; or no profile row at all

# The simulator's mechanics that are code in flows/simulation/world.py rather than persona
# parameters, restated because benchmark may not import flows. The test of `store_profile`
# against a simulated world's profiles catches any drift between the two.
_USER_HOUR_SD = 1.0  # World._make_user: a user's preferred hour around the persona's
_USER_LOGIT_SD = 0.3  # World._make_user: a user's base logit and receptivities
_DUE_SHARE = 0.7  # _UserSim.new_task: share of tasks with a due time
_DUE_HOURS = (9.0, 12.0, 17.0, 23.5)  # _UserSim.new_task: local due times
_FATIGUE = 0.05  # p_accept: logit cost of each tip shown in the last 7 days
_DISMISS_SHARE = 0.35  # _UserSim.impression: tips not accepted that are dismissed, not ignored
# Completions land at the user's next active hour after the drawn completion time.
_SNAP_DAYS = 0.5
# p_accept's remaining terms (hour gap, prompt version, open-task context) by category: their
# mean and spread from tip to tip over the established users of World(users=200, days=56,
# seed=1). Planning and wellbeing gain from the long, overdue lists those users keep.
_TIP_LOGIT = {"focus": -0.6, "planning": -0.15, "wellbeing": -0.35, "review": -0.6}
_TIP_LOGIT_SD = 1.05

# Titles per project of every persona. Harmless, but not all plain ASCII, because users' are
# not: accents, other scripts, emoji, typographic punctuation, a ligature, and look-alikes
# (a fullwidth S, a Cyrillic "a" in "Pay"), which the prompt code folds, cleans and fences.
TASK_TITLES: dict[str, tuple[str, ...]] = {
    "Study": (
        "Statistics problem set 6",
        "Flashcards for the organic chemistry quiz",
        "Read two papers on attention",
        "Revise lecture notes, week 9",
    ),
    "Thesis": (
        "Draft the methods section of chapter 3",
        "Email supervisor about data access",
        "\ufb01x figure 4 axis labels",  # "fi" ligature
        "Back up the thesis folder",
    ),
    "Personal": ("Laundry", "Call Zoë back", "Renew passport", "Dentist check-up"),
    "Team": (
        "1:1 notes for Priya",
        "Review the Q3 OKR draft",
        "Approve holiday requests",
        "Plan the team offsite",
    ),
    "Hiring": (
        "Screen three backend CVs",
        "Interview debrief \u2013 José",  # en dash
        "\uff33end offer letter to the new designer",  # fullwidth S
        "Update the job ad",
    ),
    "Roadmap": (
        "Prioritise Q1 roadmap items",
        "Write RFC for the search rewrite",
        "Sync with design on onboarding",
        "Estimate the billing migration",
    ),
    "Inbox": (
        "Reply to finance about the budget",
        "Expense report (Munich trip)",
        "Book a meeting room for Thursday",
        "Unsubscribe from newsletters",
    ),
    "Client A": (
        "Send mockups to Client A",
        "Fix login bug reported by Client A",
        "Café menu redesign: second round",
        "Call Client A about scope",
    ),
    "Client B": (
        "Draft invoice for Client B",
        "Weekly call notes for Client B",
        "\u041b\u043e\u0433\u043e\u0442\u0438\u043f: final colours",  # Russian "logo"
        "Translate the landing page",
    ),
    "Invoices": (
        "Chase unpaid invoice #1042",
        "Quarterly VAT return",
        "Send invoice to 株式会社サクラ",
        "Reconcile bank statement",
    ),
    "Home": (
        "Fix the leaking tap",
        "Order groceries",
        "P\u0430y the electricity bill",  # Cyrillic a
        "Book boiler service",
    ),
    "School": (
        "Sign the permission slip",
        "Buy poster paper for Mia\u2019s project",  # typographic apostrophe
        "Parent-teacher meeting",
        "Pack the lunchboxes",
    ),
    "Errands": (
        "Pick up dry cleaning",
        "Return parcel 📦",
        "Post office: birthday card for Grandma",
        "Car wash",
    ),
    "Work": (
        "Timesheet for this week",
        "Prepare slides for Monday",
        "Reply to Anna\u2019s email",
        "Renew the parking permit",
    ),
}


class Draws:
    """Random draws built on `random.Random.random()` from a string seed alone: Python keeps
    that stream across versions, and may change how its other methods use it."""

    def __init__(self, seed: str) -> None:
        self._random = random.Random(seed).random

    def uniform(self) -> float:
        return self._random()

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high]."""
        return low + int(self._random() * (high - low + 1))

    def choice(self, options: Sequence[T]) -> T:
        return options[int(self._random() * len(options))]

    def weighted(self, weights: Sequence[float]) -> int:
        """An index, drawn with probability proportional to its weight."""
        target, total = self._random() * sum(weights), 0.0
        for index, weight in enumerate(weights):
            total += weight
            if target < total:
                return index
        return len(weights) - 1  # rounding in the sum

    def distinct(self, options: Sequence[T], k: int) -> list[T]:
        """`k` different options, in drawn order."""
        if k > len(options):
            raise ValueError(f"cannot draw {k} different options from {len(options)}")
        left = list(options)
        return [left.pop(int(self._random() * len(left))) for _ in range(k)]

    def normal(self, sd: float) -> float:
        # Strictly inside (0, 1): the inverse CDF is infinite at both ends.
        u = (math.floor(self._random() * 2**53) + 0.5) / 2**53
        return sd * NormalDist().inv_cdf(u)

    def poisson(self, mean: float) -> int:
        """By inversion, exact for the means here (exp(-mean) underflows past about 700)."""
        if not 0 <= mean < 700:
            raise ValueError(f"poisson mean {mean} outside [0, 700)")
        u, k, term = self._random(), 0, math.exp(-mean)
        total = term
        while u > total and term > 0:
            k += 1
            term *= mean / k
            total += term
        return k

    def binomial(self, n: int, p: float) -> int:
        return sum(self._random() < p for _ in range(n))


class ScenarioUser(BaseModel):
    """A user of a persona, drawn as the simulator draws its own (World._make_user)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    persona: Persona
    timezone: str
    preferred_hour: int = Field(ge=0, le=23)
    base_logit: float
    receptivity: dict[str, float]
    tenure_days: int | None = Field(ge=0, description="None: joined today, no profile row yet")


def draw_user(persona: Persona, tenure_days: int | None, draws: Draws) -> ScenarioUser:
    return ScenarioUser(
        persona=persona,
        timezone=draws.choice(persona.timezones),
        preferred_hour=round(persona.active_hour + draws.normal(_USER_HOUR_SD)) % 24,
        base_logit=persona.base_logit + draws.normal(_USER_LOGIT_SD),
        receptivity={
            c: persona.receptivity[c] + draws.normal(_USER_LOGIT_SD) for c in TIP_CATEGORIES
        },
        tenure_days=tenure_days,
    )


def _ratio(numerator: int, denominator: int) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def store_profile(user: ScenarioUser, draws: Draws) -> Profile:
    """The profile row the online store would hold for `user` (feature_repo/profile_transforms
    over the simulator's events), from the persona's rates rather than from events:

    - history: the first day is on average half over, so `tenure_days + 0.5` days of it; a
      window of w days holds min(history, w) days of events;
    - tasks: created at tasks_per_day, a share abandon_share never completed (and never
      closed: they pile up, as in the simulator), the others completed after completion_days
      scaled by the simulator's priority urgency, plus _SNAP_DAYS; so a window holds
      completions from `delay` days after the history starts, the open tasks are those in
      flight plus all abandoned ones, and the overdue ones are the abandoned with a due time
      (due a few days after creation, so past it) plus half of those in flight with one;
    - tips: shown at tips_per_day, each of a uniformly drawn category, accepted with
      p_accept's user terms (base logit + receptivity), the fatigue of the week's tips, and
      the rest drawn per tip with its measured mean and spread (_TIP_LOGIT); rates as the
      store computes them, category rates smoothed toward the overall one by
      RATE_PSEUDO_COUNT;
    - activity: a day is idle when no task was created or completed on it and no tip was
      accepted or dismissed (Poisson), the first day never; streak and active days count back
      from the as-of day;
    - preferred hour: the user's, once there is a completion or acceptance in 28 days to
      estimate it from.

    A user who joined today has no row: every feature null, as the store would return it.
    """
    if user.tenure_days is None:
        return {f.name: None for f in PROFILE_FEATURES}
    persona = user.persona
    history = user.tenure_days + 0.5
    urgency = sum(w * (0.5 + 0.25 * k) for k, w in enumerate(persona.priority_weights))
    delay = persona.completion_days * urgency + _SNAP_DAYS
    done_per_day = persona.tasks_per_day * (1 - persona.abandon_share)

    def covered(back: float, lag: float = 0.0) -> float:
        """Of the last `back` days, how many hold events of a kind that starts `lag` days
        into the history."""
        return min(max(history - lag, 0.0), back)

    done_7d = draws.poisson(done_per_day * covered(7, delay))
    done_28d = done_7d + draws.poisson(
        done_per_day * (covered(WINDOW_DAYS, delay) - covered(7, delay))
    )
    in_flight = done_per_day * min(delay, history)
    abandoned = persona.tasks_per_day * persona.abandon_share * history
    open_eod = draws.poisson(in_flight + abandoned)
    overdue_eod = draws.binomial(
        open_eod, _DUE_SHARE * (abandoned + in_flight / 2) / (abandoned + in_flight)
    )

    shown_7d = draws.poisson(persona.tips_per_day * covered(7))
    shown_28d = shown_7d + draws.poisson(persona.tips_per_day * (covered(WINDOW_DAYS) - covered(7)))
    shown = dict.fromkeys(TIP_CATEGORIES, 0)
    accepted = dict.fromkeys(TIP_CATEGORIES, 0)
    for _ in range(shown_28d):
        category = draws.choice(TIP_CATEGORIES)
        logit = (
            user.base_logit
            + user.receptivity[category]
            + _TIP_LOGIT[category]
            + draws.normal(_TIP_LOGIT_SD)
            - _FATIGUE * shown_7d
        )
        shown[category] += 1
        accepted[category] += draws.uniform() < 1 / (1 + math.exp(-logit))
    overall = _ratio(sum(accepted.values()), shown_28d)

    reactions = persona.tips_per_day * (_DISMISS_SHARE + (1 - _DISMISS_SHARE) * (overall or 0))
    idle = math.exp(-(persona.tasks_per_day + done_per_day + reactions))
    active = [draws.uniform() >= idle for _ in range(user.tenure_days)] + [True]
    streak = active.index(False) if False in active else len(active)

    profile: Profile = {
        "completion_rate_7d": _ratio(done_7d, open_eod + done_7d),
        "tasks_completed_7d": done_7d,
        "open_tasks_eod": open_eod,
        "overdue_tasks_eod": overdue_eod,
        "preferred_hour": user.preferred_hour if done_28d or sum(accepted.values()) else None,
        "tips_shown_7d": shown_7d,
        "tip_accept_rate_28d": overall,
        "streak_days": streak,
        "active_days_28d": sum(active[:WINDOW_DAYS]),
        "tenure_days": user.tenure_days,
    }
    for category in TIP_CATEGORIES:
        profile[f"accept_rate_{category}_28d"] = (
            None
            if overall is None
            else round(
                (accepted[category] + RATE_PSEUDO_COUNT * overall)
                / (shown[category] + RATE_PSEUDO_COUNT),
                3,
            )
        )
    return {f.name: profile[f.name] for f in PROFILE_FEATURES}


def _at(day: date, hour: float, zone: tzinfo) -> datetime:
    return datetime.combine(day, time(int(hour), round(hour % 1 * 60)), zone)


def _due(kind: Due, now: datetime, draws: Draws) -> datetime | None:
    """A due time of `kind` for a task open at `now` (local), at one of the simulator's."""
    today, zone = now.date(), now.tzinfo
    if kind == "overdue":
        return _at(today - timedelta(days=draws.integer(1, 6)), draws.choice(_DUE_HOURS), zone)
    if kind == "later":
        return _at(today + timedelta(days=draws.integer(1, 7)), draws.choice(_DUE_HOURS), zone)
    if kind == "today":
        clock = now.hour + now.minute / 60
        # Past the last due time of the day, the day's last minute is still later today.
        later = [h for h in _DUE_HOURS if h > clock] or [23 + 59 / 60]
        return _at(today, draws.choice(later), zone)
    return None


def _tasks(load: Load, persona: Persona, now: datetime, draws: Draws) -> list[Task]:
    if load == "empty":
        return []
    kinds: list[Due]
    if load == "light":
        count = draws.integer(*LIGHT_TASKS)
        kinds = [draws.choice(("none", "today", "later")) for _ in range(count)]
    else:
        count = draws.integer(*HEAVY_TASKS)
        kinds = ["overdue"] * HEAVY_OVERDUE + ["today"]
        kinds += [
            draws.choice(("none", "overdue", "today", "later")) for _ in range(count - len(kinds))
        ]
        kinds = draws.distinct(kinds, count)  # shuffled: the sure ones need not come first
    titles = [(project, title) for project in persona.projects for title in TASK_TITLES[project]]
    return [
        Task(
            id=f"t{k}",
            title=title,
            priority=1 + draws.weighted(persona.priority_weights),
            due=_due(kind, now, draws),
            project=project,
        )
        for k, ((project, title), kind) in enumerate(
            zip(draws.distinct(titles, count), kinds, strict=True), start=1
        )
    ]


def _scenario(
    scenario_id: str,
    persona: Persona,
    hour: int,
    load: Load,
    newcomer: bool,
    category: str | None,
    draws: Draws,
) -> Scenario:
    tenure = (
        draws.choice((None, *range(NEWCOMER_TENURE_DAYS + 1)))
        if newcomer
        else draws.integer(*ESTABLISHED_TENURE_DAYS)
    )
    user = draw_user(persona, tenure, draws)
    profile = store_profile(user, draws)
    zone = ZoneInfo(user.timezone)
    day = REFERENCE_DAY - timedelta(days=draws.integer(0, 6))
    now = datetime.combine(day, time(hour, draws.integer(0, 59)), zone)
    return Scenario(
        id=scenario_id,
        persona=persona.name,
        slot=slot_of(persona, hour),
        profile=profile,
        context=RequestContext(
            timestamp=now, timezone=user.timezone, tasks=_tasks(load, persona, now, draws)
        ),
        category=category,
    )


def scenario_id(set_id: str, persona: str, hour: int, load: Load, n: int) -> str:
    """`<set version>-<persona>-<hour>-<load>-<n>`, e.g. v2-busy-manager-08-heavy-3."""
    version = set_id.rsplit("-", 1)[-1]
    return f"{version}-{persona.replace('_', '-')}-{hour:02d}-{load}-{n}"


def generate_scenario_set(
    seed: int, grid: ScenarioGrid = V2_GRID, set_id: str = V2_SET_ID
) -> ScenarioSet:
    """The set of `grid`'s cells x replicates, drawn from `seed` alone (see the module doc)."""
    options = (None, *TIP_CATEGORIES)
    scenarios = []
    for name in grid.personas:
        for hour in grid.hours:
            for load in grid.loads:
                start = Draws(f"{seed}/{set_id}/{name}/{hour}/{load}").integer(0, len(options) - 1)
                for n in range(1, grid.replicates + 1):
                    sid = scenario_id(set_id, name, hour, load, n)
                    scenarios.append(
                        _scenario(
                            sid,
                            _PERSONAS[name],
                            hour,
                            load,
                            newcomer=n <= grid.newcomers,
                            category=options[(start + n) % len(options)],
                            draws=Draws(f"{seed}/{sid}"),
                        )
                    )
    return ScenarioSet(
        id=set_id,
        description=(
            f"{len(grid.personas)} personas of the simulated world x local hours "
            f"{', '.join(f'{h:02d}' for h in grid.hours)} x task loads {', '.join(grid.loads)}, "
            f"{grid.replicates} users each ({grid.newcomers} new): {grid.size} scenarios, "
            f"generated by benchmark/scenario_gen.py from seed {seed}. Regenerate, never edit."
        ),
        scenarios=tuple(scenarios),
    )


def scenario_set_json(scenario_set: ScenarioSet) -> str:
    """The set's file: the models' field order, indented, ASCII (escapes show look-alikes in a
    diff, and every reader decodes it alike), a final newline."""
    return json.dumps(scenario_set.model_dump(mode="json"), indent=2) + "\n"


def v2_path() -> Path:
    return SCENARIO_DIR / f"{V2_SET_ID}.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=f"Check or (re)write {V2_SET_ID}.json.")
    parser.add_argument("--write", action="store_true", help="write the file, do not check it")
    args = parser.parse_args(argv)
    path, text = v2_path(), scenario_set_json(generate_scenario_set(V2_SEED))
    if args.write:
        path.write_text(text, encoding="ascii")
        print(f"wrote {path}")
        return 0
    if path.is_file() and path.read_text(encoding="ascii") == text:
        print(f"{path} is up to date")
        return 0
    print(f"{path} is not generate_scenario_set({V2_SEED}); a changed set is a new version")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
