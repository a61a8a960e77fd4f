"""The benchmark's models: their config (benchmark/models.yaml), size guard, family, and calls.

models.yaml lists deployments in LiteLLM Router's model_list format; an entry `from_gateway:
GROUP` reuses the LLM gateway's deployment of that group (service/generation/gateway.yaml:
provider, endpoint, generation parameters, prices), so the benchmark runs a model as the
service would, under a benchmark name, with only its own additions stated here. ModelsFile
is the file as written; ModelsConfig, what the phases use, has every entry resolved.

Every call goes through a LiteLLM Router holding that one deployment, so prices come from the
config and the answer is the model's own: no fallback, no retry, no output check (the
benchmark measures those failures instead of hiding them). Ollama models get keep_alive=0,
through `ollama_chat/`, which sends it where Ollama reads it, so a model leaves memory as soon
as the benchmark moves on to the next one.
"""

import asyncio
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import litellm
import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from benchmark.rules_judge import register_rules_judge
from service.generation.gateway import DEFAULT_CONFIG as GATEWAY_CONFIG
from service.generation.gateway import Deployment, GatewayConfig
from service.generation.rules_llm import register_rules_provider

MODELS_CONFIG = Path(__file__).with_name("models.yaml")
MAX_PARAMETERS_B = 4.0
OLLAMA_PREFIXES = ("ollama_chat/", "ollama/")
# "3b", "3.2B", "567m", "8x7b": a size in a name tag or in Ollama's details.parameter_size.
_SIZE = re.compile(r"(?<![a-z0-9.])(?:(\d+)x)?(\d+(?:\.\d+)?)([bm])(?![a-z0-9])", re.IGNORECASE)


class ModelsConfig(BaseModel):
    """The benchmark's deployments, every one resolved: what the phases call."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    env_defaults: dict[str, str] = Field(default_factory=dict)
    model_list: tuple[Deployment, ...] = Field(min_length=1)

    @classmethod
    def from_yaml(cls, path: Path | None = None) -> "ModelsConfig":
        raw = yaml.safe_load((path or MODELS_CONFIG).read_text())
        return ModelsFile.model_validate(raw).resolve()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.model_name for d in self.model_list)

    def deployment(self, name: str) -> Deployment:
        for deployment in self.model_list:
            if deployment.model_name == name:
                return deployment
        raise ValueError(f"unknown model {name!r}; known: {', '.join(self.names)}")


class FromGateway(BaseModel):
    """A model_list entry reusing the gateway's deployment of one model group."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    from_gateway: str = Field(min_length=1, description="a model group in gateway.yaml")
    model_name: str = Field(min_length=1, description="the benchmark's name for it")
    litellm_params: dict[str, Any] = Field(
        default_factory=dict, description="parameters replacing the gateway's (e.g. model)"
    )
    model_info: dict[str, Any] = Field(
        default_factory=dict, description="added to the gateway's: id, family, parameters_b"
    )

    def resolve(self, gateway: GatewayConfig) -> Deployment:
        found = [d for d in gateway.model_list if d.model_name == self.from_gateway]
        if len(found) != 1:
            groups = sorted({d.model_name for d in gateway.model_list})
            raise ValueError(
                f"{self.model_name}: from_gateway {self.from_gateway!r} must name a model group "
                f"with one deployment; groups: {', '.join(groups)}"
            )
        (base,) = found
        return Deployment.model_validate(
            {
                "model_name": self.model_name,
                "litellm_params": base.litellm_params | self.litellm_params,
                "model_info": base.model_info.model_dump() | self.model_info,
            }
        )


def _entry_kind(entry: object) -> str:
    is_reference = isinstance(entry, FromGateway) or (
        isinstance(entry, dict) and "from_gateway" in entry
    )
    return "gateway" if is_reference else "own"


class ModelsFile(BaseModel):
    """benchmark/models.yaml as written: deployments of its own and references to the gateway's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    env_defaults: dict[str, str] = Field(
        default_factory=dict, description="over the gateway's env_defaults"
    )
    model_list: tuple[
        Annotated[
            Annotated[Deployment, Tag("own")] | Annotated[FromGateway, Tag("gateway")],
            Discriminator(_entry_kind),
        ],
        ...,
    ] = Field(min_length=1)

    def resolve(self, gateway: GatewayConfig | None = None) -> ModelsConfig:
        """Every entry as a deployment, in the file's order; `gateway` defaults to the
        service's gateway.yaml."""
        if gateway is None:
            # Its file, not GatewayConfig.from_yaml: the benchmark has no use for a primary
            # group, so $TIPML_LLM_MODEL must not decide whether it can run.
            gateway = GatewayConfig.model_validate(yaml.safe_load(GATEWAY_CONFIG.read_text()))
        return ModelsConfig(
            env_defaults=gateway.env_defaults | self.env_defaults,
            model_list=tuple(
                e.resolve(gateway) if isinstance(e, FromGateway) else e for e in self.model_list
            ),
        )


class ModelSize(BaseModel):
    model_config = ConfigDict(frozen=True)

    billions: float | None
    source: Literal["declared", "ollama", "name", "unknown"]
    detail: str


class ModelRefused(ValueError):
    """The size guard refused a model before any call to it."""


def parse_size(text: str) -> float | None:
    """Billions of parameters in `text` ("3.2B", "llama3.2:3b", "567M", "8x7b"), or None."""
    match = _SIZE.search(text)
    if match is None:
        return None
    experts, number, unit = match.groups()
    billions = float(number) * (int(experts) if experts else 1)
    return billions / 1000 if unit.lower() == "m" else billions


def is_ollama(litellm_model: str) -> bool:
    return litellm_model.startswith(OLLAMA_PREFIXES)


def _ollama_show(api_base: str, name: str, timeout_s: float) -> str | None:
    """details.parameter_size from Ollama's /api/show, or None when it cannot say."""
    try:
        response = httpx.post(
            f"{api_base.rstrip('/')}/api/show", json={"model": name}, timeout=timeout_s
        )
        response.raise_for_status()
        return response.json().get("details", {}).get("parameter_size") or None
    except (httpx.HTTPError, ValueError):
        return None


def model_size(
    deployment: Deployment, params: Mapping[str, Any], timeout_s: float = 5.0
) -> ModelSize:
    declared = deployment.model_info.model_extra.get("parameters_b")
    if declared is not None:
        return ModelSize(billions=float(declared), source="declared", detail="models.yaml")
    litellm_model = str(params["model"])
    name = litellm_model.split("/", 1)[-1]
    if is_ollama(litellm_model) and params.get("api_base"):
        shown = _ollama_show(str(params["api_base"]), name, timeout_s)
        if shown and (billions := parse_size(shown)) is not None:
            return ModelSize(billions=billions, source="ollama", detail=f"/api/show: {shown}")
    tag = name.split(":", 1)[1] if ":" in name else name
    if (billions := parse_size(tag)) is not None:
        return ModelSize(billions=billions, source="name", detail=f"name tag {tag!r}")
    return ModelSize(billions=None, source="unknown", detail=f"no size for {litellm_model}")


def check_size(name: str, size: ModelSize, allow_unknown: bool) -> None:
    if size.billions is None:
        if not allow_unknown:
            raise ModelRefused(
                f"{name}: parameter count unknown ({size.detail}); pass --allow-unknown-size "
                "to run it anyway"
            )
    elif size.billions > MAX_PARAMETERS_B:
        raise ModelRefused(
            f"{name}: {size.billions:g}B parameters ({size.detail}) is over the "
            f"{MAX_PARAMETERS_B:g}B limit"
        )


def model_family(deployment: Deployment) -> str:
    """Declared model_info.family, else the letters opening the model's name: llama3.2:3b ->
    llama, gpt-4o-mini -> gpt, qwen2.5 -> qwen."""
    declared = deployment.model_info.model_extra.get("family")
    if declared:
        return str(declared)
    name = str(deployment.litellm_params["model"]).split("/", 1)[-1]
    letters = re.match(r"[a-z]+", name.lower())
    return letters.group(0) if letters else name.lower()


class Answer(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None
    cost_usd: float | None
    raw: dict[str, Any] = Field(description="the provider's response as LiteLLM returned it")


class ModelClient:
    """Calls to one deployment, each bounded by `timeout_s`."""

    def __init__(
        self,
        deployment: Deployment,
        env_defaults: Mapping[str, str],
        timeout_s: float,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        register_providers()
        self.deployment = deployment
        self.params = deployment.resolved_params(env_defaults)
        if is_ollama(str(self.params["model"])):
            self.params["keep_alive"] = 0
        self.params.update(overrides or {})
        self.timeout_s = timeout_s
        self._router = litellm.Router(
            model_list=[
                {
                    "model_name": deployment.model_name,
                    "litellm_params": self.params,
                    "model_info": deployment.model_info.model_dump(),
                }
            ],
            num_retries=0,
        )

    @property
    def litellm_model(self) -> str:
        return str(self.params["model"])

    def cache_params(self) -> dict[str, Any]:
        """What changes an answer: every parameter but where it is sent and with what key."""
        hidden = {"api_base", "api_key", "keep_alive", "mock_response"}
        return {k: v for k, v in sorted(self.params.items()) if k not in hidden}

    async def complete(self, messages: list[dict[str, str]], **kwargs: Any) -> Answer:
        started = time.perf_counter()
        try:
            response = await asyncio.wait_for(
                self._router.acompletion(
                    model=self.deployment.model_name, messages=messages, **kwargs
                ),
                self.timeout_s,
            )
        except TimeoutError:
            raise litellm.Timeout(
                message=f"no answer within {self.timeout_s}s",
                model=self.deployment.model_name,
                llm_provider=self.deployment.model_name,
            ) from None
        usage = getattr(response, "usage", None)
        return Answer(
            text=response.choices[0].message.content or "",
            latency_ms=(time.perf_counter() - started) * 1000,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            cost_usd=response._hidden_params.get("response_cost"),
            raw=response.model_dump(mode="json"),
        )


def register_providers() -> None:
    """The offline custom providers the config names: the rules writer and the rules judge."""
    register_rules_provider()
    register_rules_judge()
