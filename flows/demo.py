"""Prefect flow `demo`: the main job end to end on the embedded default."""

from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from flows.experiments.ope import OpeReport, evaluate_policy
from flows.experiments.report import ExperimentReport, experiment_report
from flows.features import FeaturesParams, FeaturesReport, features
from flows.featurestore.show_online import OnlineShow, OnlineShowParams, read_online
from flows.modeling.model_card import ModelCard
from flows.modeling.registration import read_card
from flows.promote import PromoteReport, promote
from flows.simulate import SimulateParams, SimulateReport, simulate
from flows.simulation.world import PROMPT_EFFECT, WORLD_EXPERIMENT
from flows.training import TrainParams, TrainReport, training
from service.scoring.model_names import CHAMPION
from service.scoring.model_registry import version_by_alias
from service.settings import Settings
from service.tracking import registry_client

# A user the world never saw: shows every profile feature falling back.
UNKNOWN_USER = "new-user"
# A candidate policy judged on the world's log before anyone would switch it on: most traffic
# to the version the world truly favours, the rest shared by the others.
_BEST = max(PROMPT_EFFECT, key=PROMPT_EFFECT.__getitem__)
CANDIDATE_POLICY = {
    version: 0.8 if version == _BEST else 0.2 / (len(PROMPT_EFFECT) - 1)
    for version in PROMPT_EFFECT
}


class DemoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(default=500, ge=4, le=100_000)
    days: int = Field(default=35, ge=2, le=366)
    seed: int = Field(default=42, ge=0, le=2**32 - 1)


class DemoResult(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    simulated: SimulateReport
    features: FeaturesReport
    reads: OnlineShow
    trained: TrainReport
    promoted: PromoteReport
    champion_card: ModelCard | None
    experiments: ExperimentReport
    candidate_policy: OpeReport


@flow(name="demo")
def demo(params: DemoParams, settings: Settings | None = None) -> DemoResult:
    settings = settings or Settings.from_env()
    simulated = simulate(
        SimulateParams(users=params.users, days=params.days, seed=params.seed, reset=True),
        settings,
    )
    report = features(FeaturesParams(), settings)
    shown = ["u000000", "u000001", "u000002", UNKNOWN_USER]
    reads = read_online(settings, OnlineShowParams(user_ids=shown))
    trained = training(TrainParams(), settings)
    promoted = promote(settings)
    client = registry_client(settings)
    champion = version_by_alias(client, CHAMPION)
    experiments = experiment_report(settings, experiment=WORLD_EXPERIMENT)
    candidate = evaluate_policy(settings, WORLD_EXPERIMENT, CANDIDATE_POLICY)
    return DemoResult(
        simulated=simulated,
        features=report,
        reads=reads,
        trained=trained,
        promoted=promoted,
        champion_card=read_card(client, champion) if champion else None,
        experiments=experiments,
        candidate_policy=candidate,
    )
