"""The simulated world's personas: who its users are and how each kind behaves.

Pure data, here because two layers read it and the lower one may not import the higher: the
simulator (flows/simulation/world.py) draws its users and their lives from these parameters,
and the benchmark's scenario generator (benchmark/scenario_gen.py) derives its scenario users
from the same ones, so a benchmark scenario's user is one the simulated world could hold.
"""

from pydantic import BaseModel, ConfigDict, model_validator

from feature_repo.categories import TIP_CATEGORIES


class Persona(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    timezones: tuple[str, ...]
    active_hour: float  # local hour around which the user works and reads tips
    active_hour_sd: float
    tasks_per_day: float
    completion_days: float  # mean time to complete a task
    abandon_share: float  # tasks never completed
    priority_weights: tuple[float, float, float, float]  # p1..p4
    tips_per_day: float
    base_logit: float
    receptivity: dict[str, float]  # per tip category, added to the logit
    projects: tuple[str, ...]

    @model_validator(mode="after")
    def _every_category(self) -> "Persona":
        if set(self.receptivity) != set(TIP_CATEGORIES):
            raise ValueError(f"{self.name}: receptivity must cover exactly {TIP_CATEGORIES}")
        return self


PERSONAS: tuple[Persona, ...] = (
    Persona(
        name="night_owl_student",
        timezones=("America/Los_Angeles", "Asia/Kolkata", "Europe/Madrid"),
        active_hour=22.5,
        active_hour_sd=2.0,
        tasks_per_day=2.0,
        completion_days=2.5,
        abandon_share=0.25,
        priority_weights=(0.1, 0.2, 0.3, 0.4),
        tips_per_day=3.0,
        base_logit=-1.3,
        receptivity={"focus": 0.6, "planning": -0.7, "wellbeing": 0.1, "review": -0.4},
        projects=("Study", "Thesis", "Personal"),
    ),
    Persona(
        name="busy_manager",
        timezones=("America/New_York", "Europe/London"),
        active_hour=8.0,
        active_hour_sd=1.5,
        tasks_per_day=5.0,
        completion_days=1.5,
        abandon_share=0.1,
        priority_weights=(0.3, 0.3, 0.25, 0.15),
        tips_per_day=2.0,
        base_logit=-1.0,
        receptivity={"focus": 0.2, "planning": 0.7, "wellbeing": -0.9, "review": 0.2},
        projects=("Team", "Hiring", "Roadmap", "Inbox"),
    ),
    Persona(
        name="freelancer",
        timezones=("Europe/Berlin", "Asia/Tokyo", "America/Sao_Paulo"),
        active_hour=11.0,
        active_hour_sd=3.0,
        tasks_per_day=3.0,
        completion_days=2.0,
        abandon_share=0.15,
        priority_weights=(0.15, 0.25, 0.35, 0.25),
        tips_per_day=3.0,
        base_logit=-1.1,
        receptivity={"focus": 0.5, "planning": 0.0, "wellbeing": -0.2, "review": 0.4},
        projects=("Client A", "Client B", "Invoices", "Personal"),
    ),
    Persona(
        name="parent",
        timezones=("America/Chicago", "Australia/Sydney"),
        active_hour=20.5,
        active_hour_sd=1.5,
        tasks_per_day=3.5,
        completion_days=3.0,
        abandon_share=0.2,
        priority_weights=(0.2, 0.2, 0.3, 0.3),
        tips_per_day=2.5,
        base_logit=-1.2,
        receptivity={"focus": -0.5, "planning": 0.4, "wellbeing": 0.7, "review": -0.5},
        projects=("Home", "School", "Errands", "Work"),
    ),
)
