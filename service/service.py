"""The BentoML service the recommender calls: /score, /generate and /feedback.

    bentoml serve service.service:TipService        # 127.0.0.1:3000, from the source tree
    bentoml serve tipml:<version>                   # a Bento `tipml bento` built

Each worker opens its own Feast store and loads its scorer at start-up: the one the Bento
carries when it runs from a Bento built with `--arg scorer=<model tag>` (`tipml bento` does),
else `tip-scorer@champion` from MLflow, and then also the challenger, for shadow scoring, if
one exists. The FeatureService comes from the scorer's label or version tag.

/score runs on the event loop: with the embedded SQLite store its whole work is ~0.5 ms of
CPU, less than a hop to a thread and back would add (perf/score_load.py, perf/score_profile.md).
A network store's read, which may wait on the network, goes to a thread, in /score as in
/generate, which is async because it waits on an LLM.
"""

import os

# scikit-learn's tree models predict through OpenMP; a thread team per call, competing with
# the request threads for the cores, made latency depend on what else ran on the machine.
# The variable is read when scikit-learn first loads, which happens below, not before.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import dataclasses
import gc
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Literal

import anyio
import bentoml
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from feature_repo.bounds import Timestamp
from service.api.prompt_versions import RELEASED_PROMPT_VERSIONS, PromptVersionName
from service.api.request import Id, RequestContext
from service.api.schemas import (
    CandidateList,
    FeedbackResponse,
    GenerateResponse,
    ProfileFeatures,
    ScoreResponse,
    TipCategory,
)
from service.bentoml_patches import cache_local_callers, patch_timeout_middleware
from service.circuit import STARTUP_BUDGET_S, DependencyFailed
from service.events.models import Feedback, Reaction
from service.events.sink import open_sink
from service.experiments.assignment import Assignment, decide, decision_event
from service.experiments.bandit_state import BANDIT_STATE, StateCache, open_bandit_store
from service.experiments.config import ExperimentsConfig, UnknownExperiment
from service.generation.gateway import Gateway, GatewayError
from service.generation.prompt_blocks import build_prompt_context
from service.generation.prompts import UnknownPromptVersion, render, resolve_prompt_version
from service.http_boundary import guard_http_boundary
from service.rate_limit import RATE_LIMIT, open_rate_limiter
from service.scoring.candidates import candidate_rows, merge_profile
from service.scoring.feature_store import open_store
from service.scoring.model_names import CHALLENGER, CHAMPION, MODEL_NAME
from service.scoring.model_registry import (
    LoadedScorer,
    ModelRejected,
    load_packed_scorer,
    load_scorer,
    version_by_alias,
)
from service.scoring.online_features import ONLINE_STORE, FeatureRead, OnlineFeatureReader
from service.scoring.shadow import ShadowScorer
from service.settings import ENV_VARS, Settings
from service.tracking import registry_client

log = logging.getLogger(__name__)
# BentoML's root logger drops INFO; which scorer a worker serves belongs in every server log.
log.setLevel(logging.INFO)
patch_timeout_middleware()
cache_local_callers()

LIVE_SKEW = bentoml.metrics.Counter(
    name="tipml_live_skew_total",
    documentation="Requests where the recommender's profile value disagreed with the store's.",
    labelnames=["feature"],
)
DEGRADED = bentoml.metrics.Counter(
    name="tipml_degraded_total",
    documentation="Requests answered with a fallback because a dependency failed.",
    labelnames=["endpoint"],
)
DEPENDENCY_FALLBACKS = bentoml.metrics.Counter(
    name="tipml_dependency_fallbacks_total",
    documentation="Requests where a dependency failed, by dependency and why; see README.",
    labelnames=["endpoint", "dependency", "reason"],
)
RECENT_FEEDBACK = 100_000
LLM = "llm"
WORKERS_ENV = "TIPML_SERVICE_WORKERS"


def _workers(value: str) -> int | str:
    """A worker count, or "cpu_count" for one per core."""
    if value == "cpu_count":
        return value
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f'{WORKERS_ENV} must be a positive integer or "cpu_count", not {value!r}')
    return int(value)


class BentoArguments(BaseModel):
    """`bentoml build --arg scorer=<model tag>`: the scorer the Bento packs and serves.

    BentoML keeps build arguments in the Bento and sets them again before it imports the
    service to serve it, so the model the class declares is the one that was packed.
    """

    scorer: str | None = None


BENTO_ARGUMENTS = bentoml.use_arguments(BentoArguments)


def _best_first(scored: tuple[float, object]) -> float:
    """Sort key: highest score first; `sorted` is stable, so ties keep the request's order."""
    return -scored[0]


def _report(endpoint: str, failures: dict[str, str]) -> dict[str, str]:
    """Count a request's dependency failures in /metrics; returns them for the response."""
    if failures:
        DEGRADED.labels(endpoint=endpoint).inc()
    for dependency, reason in failures.items():
        DEPENDENCY_FALLBACKS.labels(endpoint=endpoint, dependency=dependency, reason=reason).inc()
    return failures


@guard_http_boundary
@bentoml.service(
    name="tipml",
    # One process per core, each with its own Feast store and models: /score is CPU-bound
    # Python, so one process serves one core (perf/score_load.py, 2 cores: 2 workers
    # doubled throughput at 8 in flight and cut p99 from 20 to 15 ms; 1 in flight unchanged).
    workers=_workers(os.environ.get(WORKERS_ENV, "cpu_count")),
    http={"host": "127.0.0.1", "port": 3000},
    traffic={"timeout": 30},
    # The per-request access log costs tail latency; metrics stay on.
    logging={"access": {"enabled": False}},
    # BentoML opens five OpenTelemetry spans per request, ~0.5 ms of /score's few; with no
    # exporter configured they go nowhere. Remove /score here when traces are collected.
    tracing={"excluded_urls": ["/score"]},
)
class TipService:
    # Declared so that `bentoml build` packs it; None in the source tree, where the champion
    # comes from MLflow. Read through the instance, BentoML resolves it from the model store.
    packed_scorer = (
        bentoml.models.BentoModel(BENTO_ARGUMENTS.scorer) if BENTO_ARGUMENTS.scorer else None
    )

    def __init__(self) -> None:
        settings = Settings.from_env()
        self.store = open_store(settings)
        self.champion = self._champion(settings)
        self.reader = OnlineFeatureReader(
            self.store,
            self.champion.feature_service,
            # An embedded SQLite read cannot hang; a network store can, and gets a budget.
            budget=None if settings.online_store == "sqlite" else settings.store_budget_s,
        )
        self.shadow = self._shadow(settings)
        self.sink = open_sink(settings, writer_id=f"service-{uuid.uuid4().hex[:12]}")
        self._recent_feedback: OrderedDict[str, None] = OrderedDict()
        self.gateway = Gateway.from_yaml()
        resolve_prompt_version(None)  # a bad DEFAULT_PROMPT_VERSION fails start-up, not requests
        self.experiments = ExperimentsConfig.from_yaml()
        self.bandit_states = StateCache(open_bandit_store(settings))
        self.rate_limiter = open_rate_limiter(settings)

    def _champion(self, settings: Settings) -> LoadedScorer:
        if self.packed_scorer is None:
            champion = load_scorer(settings, self.store, CHAMPION)
            # Not the URI itself: it may carry a database password.
            source = f"alias {CHAMPION} in the MLflow registry ({ENV_VARS['mlflow_tracking_uri']})"
        else:
            champion = load_packed_scorer(self.packed_scorer, self.store)
            source = f"this Bento's model {self.packed_scorer.tag}"
        log.info(
            "scoring with %s v%s on %s, from %s",
            MODEL_NAME,
            champion.version,
            champion.feature_service,
            source,
        )
        return champion

    def _shadow(self, settings: Settings) -> ShadowScorer | None:
        if self.packed_scorer is not None:
            # A Bento serves without MLflow: its challenger would have to come from there.
            log.info("no shadow scoring: a Bento carries its champion only")
            return None
        if version_by_alias(registry_client(settings), CHALLENGER) is None:
            return None
        try:
            challenger = load_scorer(settings, self.store, CHALLENGER)
        except ModelRejected as exc:
            log.warning("no shadow scoring: %s", exc)
            return None
        if challenger.feature_service != self.champion.feature_service:
            # The shadow scores the champion's rows; another version's would need a read of
            # its own FeatureService on every request.
            log.warning(
                "no shadow scoring: the challenger reads %s, the champion %s",
                challenger.feature_service,
                self.champion.feature_service,
            )
            return None
        return ShadowScorer(challenger, self.champion.version, settings.shadow_dir)

    @bentoml.on_startup
    async def _warm_up(self) -> None:
        """Every request path once, then freeze what start-up allocated out of the GC's way.

        The worker takes no request before this returns, so each store's first read (new
        connections, Feast's caches) happens here, under the start-up budget, and not in a
        request, where it would overrun the request budget and open the breaker. The event
        sink connects here too, within its own bound: a worker starts without NATS.
        """
        self.sink.start()
        context = RequestContext(timestamp=datetime.now(UTC), timezone="UTC")
        read = self.reader.warm_up(context, now=context.timestamp)
        self.champion.accept_probability(
            candidate_rows(self.champion.columns, read.profile, read.context, ["focus"])
        )
        for experiment in self.experiments.experiments:
            if experiment.active:
                self.bandit_states.get(experiment.id, budget=STARTUP_BUDGET_S)
        await self.gateway.warm_up()
        if self.rate_limiter is not None:
            await self.rate_limiter.warm_up()
        gc.collect()
        gc.freeze()

    @bentoml.api(route="/score")
    async def score(
        self,
        user_id: Id,
        candidates: CandidateList,
        context: RequestContext,
        profile_features: ProfileFeatures | None = None,
    ) -> ScoreResponse:
        """Score candidate tips for a user now; best first."""
        request_id = uuid.uuid4().hex
        read = await self._read_features(user_id, context)
        failures = {ONLINE_STORE: read.store_failure} if read.store_failure else {}
        merged = merge_profile(read, profile_features)
        for feature in merged.skewed:
            LIVE_SKEW.labels(feature=feature).inc()
        rows = candidate_rows(
            self.champion.columns, merged.values, read.context, [c.category for c in candidates]
        )
        scores = self.champion.accept_probability(rows)
        if self.shadow is not None:
            self.shadow.submit(request_id, user_id, [c.tip_id for c in candidates], rows, scores)
        ranked = [
            {"tip_id": c.tip_id, "category": c.category, "score": s}
            for s, c in sorted(zip(scores.tolist(), candidates, strict=True), key=_best_first)
        ]
        # Checked against the contract in one validation of plain data, then sent as it is:
        # BentoML would validate and serialize it again, and send it in three messages.
        response = ScoreResponse.model_validate(
            {
                "request_id": request_id,
                "model": {"name": MODEL_NAME, "version": self.champion.version},
                "feature_service": self.champion.feature_service,
                "candidates": ranked,
                "fallbacks": merged.fallbacks,
                "dependency_fallbacks": _report("score", failures),
                "degraded": bool(failures),
            }
        )
        return Response(response.model_dump_json(), media_type="application/json")

    async def _read_features(self, user_id: str, context: RequestContext) -> FeatureRead:
        """The read on the event loop when it is an embedded store's, else on a thread.

        An embedded SQLite read is ~0.1 ms of CPU, less than handing it to a thread and back,
        so it runs inline as the rest of /score does (it waits only while a materialization
        commits, as the one request thread used to). A network store's read can wait on the
        network, up to its budget, and must not hold the loop and every other request that long.
        """
        if self.reader.budget is None:
            return self.reader.read(user_id, context, now=datetime.now(UTC))
        return await anyio.to_thread.run_sync(self.reader.read, user_id, context, datetime.now(UTC))

    @bentoml.api(route="/generate")
    async def generate(
        self,
        user_id: Id,
        context: RequestContext,
        profile_features: ProfileFeatures | None = None,
        prompt_version: str | None = None,
        category: TipCategory | None = None,
        experiment: Id | None = None,
    ) -> GenerateResponse:
        """Write one tip for a user now, from what the scorer reads about them.

        With `experiment`, the experiment's policy picks the prompt version, and the decision
        (arm, propensity, outcome) is logged; the response's tip_id is what feedback names.
        With TIPML_GENERATE_RATE, a user past their rate gets a 429 before anything is spent.
        """
        request_id = uuid.uuid4().hex
        failures: dict[str, str] = {}
        if self.rate_limiter is not None:
            verdict = await self.rate_limiter.check(user_id)
            if verdict.failure:
                failures[RATE_LIMIT] = verdict.failure
            if not verdict.allowed:
                limiter = self.rate_limiter
                message = (
                    f"this user_id may make {limiter.per_minute} /generate requests a minute, "
                    f"{limiter.burst} at once; retry in {verdict.retry_after} s"
                )
                retry_after = {"Retry-After": str(verdict.retry_after)}
                return _error(429, "user_id", message, "rate_limited", headers=retry_after)
        assignment = None
        if experiment is not None:
            if prompt_version is not None:
                return _error(
                    422, "experiment", "give prompt_version or experiment, not both", "conflict"
                )
            try:
                configured = self.experiments.active(experiment)
            except UnknownExperiment as exc:
                known = ", ".join(e.id for e in self.experiments.experiments if e.active)
                return _error(422, "experiment", f"{exc}; active experiments: {known}", "unknown")
            state = await anyio.to_thread.run_sync(self.bandit_states.get, configured.id)
            if state.failure:
                failures[BANDIT_STATE] = state.failure
            assignment = decide(configured, user_id, request_id, state.state)
            prompt_version = assignment.arm
        try:
            version = resolve_prompt_version(prompt_version)
        except UnknownPromptVersion as exc:
            return _error(422, "prompt_version", str(exc), "unknown")
        started = time.perf_counter()
        read = await self._read_features(user_id, context)
        if read.store_failure:
            failures[ONLINE_STORE] = read.store_failure
        merged = merge_profile(read, profile_features)
        facts = dataclasses.replace(read, profile=merged.values, fallbacks=merged.fallbacks)
        messages = render(version, build_prompt_context(facts, context, category))
        try:
            tip = await self.gateway.generate(messages, version)
        except GatewayError as exc:
            log.error("generate %s: %s", request_id, exc)
            failures[LLM] = "unavailable"
            if assignment is not None:
                await self._log_decision(assignment, request_id, user_id, "error", started)
            _report("generate", failures)
            return _error(503, None, "no language model answered; try again later", LLM)
        if tip.fallback_used:
            failures[LLM] = "primary_failed"
        if assignment is not None:
            outcome = "fallback" if tip.fallback_used else "ok"
            failures |= await self._log_decision(assignment, request_id, user_id, outcome, started)
        return GenerateResponse(
            request_id=request_id,
            tip_id=request_id,
            text=tip.text,
            prompt_version=tip.prompt_version,
            model=tip.model,
            latency_ms=tip.latency_ms,
            cost_usd=tip.cost_usd,
            format_ok=tip.format_ok,
            overlong=tip.overlong,
            fallback_used=tip.fallback_used,
            fallbacks=merged.fallbacks,
            dependency_fallbacks=_report("generate", failures),
            degraded=bool(failures),
            experiment=assignment.experiment if assignment else None,
            arm=assignment.arm if assignment else None,
            propensity=assignment.propensity if assignment else None,
        )

    async def _log_decision(
        self,
        assignment: Assignment,
        request_id: str,
        user_id: str,
        outcome: Literal["ok", "fallback", "error"],
        started: float,
    ) -> dict[str, str]:
        """Log the decision; what failed on the way, for dependency_fallbacks. The tip is served
        either way: a lost decision costs the experiment one sample, a failed request costs
        the user (service/events/sink.py: in jetstream mode it is spooled, not lost)."""
        event = decision_event(
            assignment,
            request_id=request_id,
            user_id=user_id,
            outcome=outcome,
            latency_ms=(time.perf_counter() - started) * 1000,
        )
        return await anyio.to_thread.run_sync(self.sink.record, event)

    @bentoml.api(route="/feedback")
    def feedback(
        self,
        event_id: Id,
        user_id: Id,
        tip_id: Id,
        reaction: Reaction,
        prompt_version: PromptVersionName,
        timestamp: Timestamp,
    ) -> FeedbackResponse:
        """A user's reaction to a shown tip, appended once to the event log.

        When the event sink (the lake, or JetStream) cannot take it the answer is 503 naming
        it, and nothing is kept: the caller retries, and the event_id makes a retry safe."""
        if prompt_version not in RELEASED_PROMPT_VERSIONS:
            known = ", ".join(RELEASED_PROMPT_VERSIONS)
            return _error(
                422, "prompt_version", f"unknown prompt version; known: {known}", "unknown"
            )
        if event_id in self._recent_feedback:
            return FeedbackResponse(event_id=event_id, status="duplicate")
        event = Feedback(
            event_id=event_id,
            user_id=user_id,
            tip_id=tip_id,
            reaction=reaction,
            prompt_version=prompt_version,
            timestamp=timestamp,
        )
        try:
            self.sink.append(event)
        except DependencyFailed as exc:
            _report("feedback", {exc.dependency: exc.reason})
            message = f"{exc.dependency} is unavailable; retry with the same event_id"
            return _error(503, None, message, exc.dependency)
        self._recent_feedback[event_id] = None
        if len(self._recent_feedback) > RECENT_FEEDBACK:
            self._recent_feedback.popitem(last=False)
        return FeedbackResponse(event_id=event_id, status="appended")

    @bentoml.on_shutdown
    def _shut_down(self) -> None:
        if self.shadow is not None:
            self.shadow.close()
        self.sink.close()


def _error(
    status: int,
    field: str | None,
    message: str,
    kind: str,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An error shaped like BentoML's validation errors: `detail[].loc` names the field, and
    `type` says what went wrong (a 503's names the dependency that failed). BentoML sends a
    returned response as it is, headers included (a 429's Retry-After)."""
    detail = [{"loc": [field] if field else [], "msg": message, "type": kind}]
    return JSONResponse({"error": message, "detail": detail}, status_code=status, headers=headers)
