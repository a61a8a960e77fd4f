"""A simulated world of app users: personas (feature_repo/personas.py), Todoist-like tasks, tips
shown and reactions.

Pure and deterministic: the same (seed, users, days, end) gives the same events, event ids
included. Reactions are drawn from a known probability (`p_accept`) that depends on the
user's profile and the request context, so the Bayes-optimal (oracle) AUC of any data set
drawn here can be computed from the impressions themselves.
"""

import math
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import cached_property
from zoneinfo import ZoneInfo

import numpy as np
from pydantic import BaseModel, ConfigDict

from feature_repo.candidate_features import hour_gap
from feature_repo.categories import TIP_CATEGORIES
from feature_repo.personas import PERSONAS, Persona
from service.api.prompt_versions import RELEASED_PROMPT_VERSIONS
from service.api.request import RequestContext, Task
from service.events.models import (
    ATTRIBUTION_WINDOW,
    Decision,
    Event,
    Feedback,
    Impression,
    TaskCompleted,
    TaskCreated,
)

# True effect of each released prompt version on the acceptance logit; the bandits must find it.
PROMPT_EFFECT: dict[str, float] = {"v1": 0.0, "v2-mentor": 0.15, "v3-few-shot": 0.3}
if set(PROMPT_EFFECT) != set(RELEASED_PROMPT_VERSIONS):
    # The world draws every released version (and events accept no other): each needs an effect.
    raise RuntimeError(
        f"PROMPT_EFFECT covers {sorted(PROMPT_EFFECT)}, "
        f"but the released prompt versions are {sorted(RELEASED_PROMPT_VERSIONS)}"
    )
# The world's own logging policy: each tip's prompt version uniformly at random, logged as a
# decision with its propensity, so reports and off-policy evaluation run on simulated data.
WORLD_EXPERIMENT = "world-uniform"
PROMPT_PROPENSITY: dict[str, float] = {
    version: 1 / len(RELEASED_PROMPT_VERSIONS) for version in RELEASED_PROMPT_VERSIONS
}


_TITLES = (
    "Draft {p} update",
    "Reply to {p} email",
    "Review {p} notes",
    "Plan {p} week",
    "Call about {p}",
    "Finish {p} checklist",
    "Book {p} appointment",
    "Tidy {p} backlog",
)


class SimUser(BaseModel):
    """Ground truth about a simulated user; the models only ever see its events."""

    model_config = ConfigDict(frozen=True)

    user_id: str
    persona: str
    timezone: str
    preferred_hour: int
    first_day: int  # index of the user's first simulated day (later = newer user)
    base_logit: float
    receptivity: dict[str, float]


# How a user departs from their persona (`World._make_user`): base logit and each category's
# receptivity by N(0, TRAIT_SD), preferred hour by N(0, HOUR_SD) before rounding.
TRAIT_SD = 0.3
HOUR_SD = 1.0
# The acceptance logit lost per hour between the local hour and the preferred one.
HOUR_GAP_COEF = 0.3


def p_accept(
    user: SimUser,
    category: str,
    local_hour: float,
    open_tasks: int,
    overdue: int,
    due_today: int,
    tips_shown_7d: int,
    prompt_version: str,
) -> float:
    """The true probability that `user` accepts a tip: the simulator's ground truth."""
    logit = (
        user.base_logit
        + user.receptivity[category]
        - HOUR_GAP_COEF * hour_gap(local_hour, user.preferred_hour)
        + PROMPT_EFFECT[prompt_version]
        - 0.05 * tips_shown_7d
    )
    if category == "planning":
        logit += 0.12 * min(open_tasks, 10) - 0.4
    elif category == "focus":
        logit += 0.5 if due_today > 0 else -0.2
    elif category == "wellbeing":
        logit += 0.6 if overdue >= 3 else -0.1
    elif category == "review":
        logit += 0.3 if open_tasks >= 6 else -0.2
    return 1.0 / (1.0 + math.exp(-logit))


def observable_p_accept(oracle_p: np.ndarray, prompt_version: np.ndarray) -> np.ndarray:
    """The true accept probability of impressions with what no scorer can know at /score time
    averaged out: the observable ceiling, row for row.

    Marginalized: the prompt version. It is drawn after the tip is scored, independently of
    everything else, with PROMPT_PROPENSITY, and enters `p_accept`'s logit as the additive
    PROMPT_EFFECT. So the probability given everything else is the oracle `p` with the drawn
    version's effect taken out of its logit, averaged over the versions:
    sum over v of PROMPT_PROPENSITY[v] * sigmoid(logit(p) - effect[drawn] + effect[v]);
    the same whichever version was drawn.

    Kept as the oracle has them, because they are knowable at /score time:
    - the candidate's category, and the open, overdue and due-today task counts: the request;
    - the local time to the minute: the request's timestamp and timezone (the scorer's
      features keep the hour only, a choice of theirs, not a limit);
    - the tips shown in the 7 days before the request: the service's own impression log (the
      feature counts them as of the last UTC midnight, again a choice of freshness);
    - the user's traits (base logit, category receptivity, preferred hour): latent, but fixed
      per user, so enough history reveals them. The ceiling is that of a scorer that knows
      them; with a few weeks of history, and for new users most of all, no scorer does. The
      ceiling model (flows/modeling/ceiling.py) measures how close the scorer's learner gets
      when given them.
    """
    p = np.clip(np.asarray(oracle_p, dtype=np.float64), 1e-15, 1 - 1e-15)
    drawn = np.array([PROMPT_EFFECT[str(v)] for v in np.asarray(prompt_version)], dtype=float)
    rest = np.log(p) - np.log1p(-p) - drawn
    marginal = np.zeros_like(rest)
    for version, share in PROMPT_PROPENSITY.items():
        marginal += share / (1.0 + np.exp(-(rest + PROMPT_EFFECT[version])))
    return marginal


@dataclass
class _SimTask:
    record: TaskCreated
    completed: datetime | None


class _UserSim:
    """One user's life in the world, drawn from that user's own random stream."""

    def __init__(self, user: SimUser, persona: Persona, rng: np.random.Generator) -> None:
        self.user = user
        self.persona = persona
        self.rng = rng
        # Ids come from their own stream: numpy's bytes() is 10x slower per call.
        self.id_rng = random.Random(int(rng.integers(2**63)))
        self.zone = ZoneInfo(user.timezone)
        self.tasks: list[_SimTask] = []
        self.shown: list[datetime] = []

    def pick(self, options: tuple) -> object:
        # Generator.choice converts its argument to an array on every call: 10x slower.
        return options[int(self.rng.integers(len(options)))]

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.id_rng.getrandbits(128), version=4))

    def at_local(self, moment: datetime, hour: float) -> datetime:
        """UTC time of local `hour` on the local calendar day of `moment`."""
        hour = min(max(hour, 0.0), 23.99)
        day = moment.astimezone(self.zone).date()
        stamp = datetime.combine(day, time(int(hour), int((hour % 1) * 60)), self.zone)
        return stamp.astimezone(UTC)

    def active_hour(self) -> float:
        return float(self.rng.normal(self.user.preferred_hour, self.persona.active_hour_sd)) % 24

    def events(self, start: datetime, first_local: datetime, days: int) -> list[Event]:
        """Events of `days` local days from `first_local`; nothing happens before `start`."""
        out: list[Event] = []
        for offset in range(days):
            day = first_local + timedelta(days=offset)
            for _ in range(self.rng.poisson(self.persona.tasks_per_day)):
                created = self.at_local(day, self.active_hour())
                if created >= start:
                    out.extend(self.new_task(created))
            hours = [
                self.active_hour() if self.rng.random() < 0.6 else float(self.rng.uniform(7, 23.5))
                for _ in range(self.rng.poisson(self.persona.tips_per_day))
            ]
            for hour in sorted(hours):
                at = self.at_local(day, hour)
                if at >= start:
                    out.extend(self.impression(at))
        return sorted(out, key=lambda e: e.timestamp)

    def new_task(self, created: datetime) -> list[Event]:
        rng, persona = self.rng, self.persona
        priority = int(np.searchsorted(np.cumsum(persona.priority_weights), rng.random())) + 1
        due = None
        if rng.random() < 0.7:
            due_hour = float(self.pick((9.0, 12.0, 17.0, 23.5)))
            due = self.at_local(created + timedelta(days=float(rng.exponential(2.0))), due_hour)
            if due <= created:
                due += timedelta(days=1)
        completed = None
        if rng.random() >= persona.abandon_share:
            urgency = 0.5 + 0.25 * (priority - 1)  # p1 tasks get done sooner
            done = created + timedelta(
                days=float(rng.exponential(persona.completion_days * urgency))
            )
            completed = self.at_local(done, self.active_hour())
            if completed <= created:
                completed += timedelta(days=1)
        project = str(self.pick(persona.projects))
        record = TaskCreated(
            event_id=self.new_id(),
            user_id=self.user.user_id,
            timestamp=created,
            task_id=self.new_id(),
            title=str(self.pick(_TITLES)).format(p=project.lower()),
            project=project,
            priority=priority,
            due=due,
            timezone=self.user.timezone,
        )
        self.tasks.append(_SimTask(record, completed))
        if completed is None:
            return [record]
        done_event = TaskCompleted(
            event_id=self.new_id(),
            user_id=self.user.user_id,
            timestamp=completed,
            task_id=record.task_id,
            timezone=self.user.timezone,
        )
        return [record, done_event]

    def impression(self, at: datetime) -> list[Event]:
        rng = self.rng
        open_tasks = [
            t.record
            for t in self.tasks
            if t.record.timestamp <= at and (t.completed is None or t.completed > at)
        ]
        local = at.astimezone(self.zone)
        overdue = sum(t.due is not None and t.due < at for t in open_tasks)
        due_today = sum(
            t.due is not None and t.due.astimezone(self.zone).date() == local.date()
            for t in open_tasks
        )
        shown_7d = sum(at - timedelta(days=7) <= s < at for s in self.shown)
        self.shown.append(at)
        category = str(self.pick(TIP_CATEGORIES))
        prompt_version = str(self.pick(RELEASED_PROMPT_VERSIONS))  # PROMPT_PROPENSITY: uniform
        p = p_accept(
            self.user,
            category,
            local.hour + local.minute / 60,
            open_tasks=len(open_tasks),
            overdue=overdue,
            due_today=due_today,
            tips_shown_7d=shown_7d,
            prompt_version=prompt_version,
        )
        impression = Impression(
            event_id=self.new_id(),
            user_id=self.user.user_id,
            timestamp=at,
            tip_id=self.new_id(),
            category=category,
            prompt_version=prompt_version,
            context=RequestContext(
                timestamp=at,
                timezone=self.user.timezone,
                tasks=[
                    Task(
                        id=t.task_id,
                        title=t.title,
                        priority=t.priority,
                        due=t.due,
                        project=t.project,
                    )
                    for t in open_tasks
                ],
            ),
            oracle_p_accept=p,
        )
        draw = rng.random()
        if draw < p:
            reaction, delay = "accepted", timedelta(minutes=float(rng.uniform(1, 20)))
        elif draw < p + (1 - p) * 0.35:
            reaction, delay = "dismissed", timedelta(minutes=float(rng.uniform(0.2, 5)))
        else:
            reaction, delay = "ignored", ATTRIBUTION_WINDOW
        feedback = Feedback(
            event_id=self.new_id(),
            user_id=self.user.user_id,
            timestamp=at + delay,
            tip_id=impression.tip_id,
            reaction=reaction,
            prompt_version=prompt_version,
        )
        # Derived ids keep the random streams, and so the rest of the world, as they were.
        decision = Decision(
            event_id=f"{impression.event_id}.decision",
            user_id=self.user.user_id,
            timestamp=at,
            request_id=impression.tip_id,
            tip_id=impression.tip_id,
            experiment=WORLD_EXPERIMENT,
            arm=prompt_version,
            propensity=PROMPT_PROPENSITY[prompt_version],
            policy="weighted",
            policy_version=f"{WORLD_EXPERIMENT}:weighted:r0",
            # The world models neither LLM latency nor LLM failures.
            outcome="ok",
            latency_ms=0.0,
        )
        return [decision, impression, feedback]


def user_id(index: int) -> str:
    """The id of a world's user at `index`, known before the user is drawn (shards use it)."""
    return f"u{index:06d}"


class World:
    """Users and their events over `days` UTC days ending at `end` (exclusive).

    Each user is drawn from its own random streams, seeded by (seed, user index), so any
    subset of users (a shard of them) gets exactly the events the whole world gives them.
    """

    def __init__(self, users: int, days: int, seed: int, end: datetime) -> None:
        if users < 1 or days < 1:
            raise ValueError("users and days must be >= 1")
        if end.tzinfo is None:
            raise ValueError("end must be timezone-aware")
        self.seed = seed
        self.days = days
        self.end = end.astimezone(UTC)
        self.start = self.end - timedelta(days=days)
        self.user_count = users

    @cached_property
    def users(self) -> list[SimUser]:
        """Every user, drawn on first use: a shard's events need only its own users."""
        return [self._make_user(i) for i in range(self.user_count)]

    def _rng(self, user_index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, user_index, stream])

    def _make_user(self, index: int) -> SimUser:
        rng = self._rng(index, 0)
        persona = PERSONAS[index % len(PERSONAS)]
        newcomer = self.days > 1 and rng.random() < 0.3
        return SimUser(
            user_id=user_id(index),
            persona=persona.name,
            timezone=str(rng.choice(persona.timezones)),
            preferred_hour=round(persona.active_hour + rng.normal(0, HOUR_SD)) % 24,
            first_day=int(rng.integers(1, self.days)) if newcomer else 0,
            base_logit=persona.base_logit + float(rng.normal(0, TRAIT_SD)),
            receptivity={
                c: persona.receptivity[c] + float(rng.normal(0, TRAIT_SD)) for c in TIP_CATEGORIES
            },
        )

    def events(self, users: Iterable[int] | None = None) -> Iterator[Event]:
        """Events inside the window for the users at the indexes `users` (all by default),
        user by user."""
        personas = {p.name: p for p in PERSONAS}
        for index in users if users is not None else range(self.user_count):
            if not 0 <= index < self.user_count:
                raise IndexError(f"user {index} is not among the world's {self.user_count}")
            user = self._make_user(index)
            sim = _UserSim(user, personas[user.persona], self._rng(index, 1))
            first = self.start + timedelta(days=user.first_day)
            local_days = self.days - user.first_day + 1
            for event in sim.events(first, first.astimezone(sim.zone), local_days):
                if event.timestamp < self.end:
                    yield event
