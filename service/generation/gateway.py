"""The LLM gateway for /generate: one tip from the rendered messages, or a clear failure.

A LiteLLM Router built from service/generation/gateway.yaml picks the deployment within a model
group, resolves its parameters and prices the answer. The gateway walks the model groups itself,
primary first and then its fallbacks, because it must bound every attempt: LiteLLM ignores the
timeout for custom providers, so each attempt runs under `asyncio.wait_for`. For the same reason the
Router gets no fallbacks and no retries of its own; the YAML's retry policy is applied here, per
attempt.

An answer that breaks the output contract (service/generation/prompts.py `check_output`) falls back
once to the next model group instead of being retried: the same prompt to the same model tends to
break it the same way, and the fallback answers sooner. When no group is left, or the one fallback
for a bad answer is spent, the answer is returned with its flags and the caller decides. An answer
that echoes the prompt is the exception: it would hand the instructions to the user, so it is never
returned, whatever the budget; the next group answers, and when none is left the gateway fails.
Nothing here logs prompt text, task titles or answers (LiteLLM logs them only at DEBUG).
"""

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import litellm
import yaml
from litellm import ModelResponse
from litellm.types.router import RetryPolicy
from litellm.utils import get_num_retries_from_retry_policy
from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveFloat, model_validator

from service.generation.prompts import check_output
from service.generation.rules_llm import register_rules_provider

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).with_name("gateway.yaml")
PRIMARY_ENV = "TIPML_LLM_MODEL"
_ENV_REFERENCE = "os.environ/"  # LiteLLM's spelling of a value read from the environment


class GatewayError(RuntimeError):
    """No model group produced an answer that may be returned."""


class DeploymentInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    id: str = Field(min_length=1)
    input_cost_per_token: NonNegativeFloat
    output_cost_per_token: NonNegativeFloat


class Deployment(BaseModel):
    """One entry of LiteLLM's model_list, with the id and prices the gateway relies on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_name: str = Field(min_length=1)
    litellm_params: dict[str, Any]
    model_info: DeploymentInfo

    @model_validator(mode="after")
    def _has_model(self) -> "Deployment":
        if not self.litellm_params.get("model"):
            raise ValueError(f"{self.model_name}: litellm_params.model is required")
        return self

    def resolved_params(self, env_defaults: Mapping[str, str]) -> dict[str, Any]:
        """litellm_params with each `os.environ/NAME` value read from the environment."""
        params: dict[str, Any] = {}
        for key, value in self.litellm_params.items():
            if isinstance(value, str) and value.startswith(_ENV_REFERENCE):
                name = value.removeprefix(_ENV_REFERENCE)
                value = os.environ.get(name) or env_defaults.get(name)
                if not value:
                    raise ValueError(
                        f"model group {self.model_name!r} needs the environment variable "
                        f"{name} (its litellm_params.{key})"
                    )
            params[key] = value
        return params


class GatewayConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    primary: str
    timeout_s: PositiveFloat
    retry_policy: RetryPolicy
    fallbacks: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    env_defaults: dict[str, str] = Field(default_factory=dict)
    model_list: tuple[Deployment, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _groups_exist(self) -> "GatewayConfig":
        groups = {d.model_name for d in self.model_list}
        named = {self.primary, *self.fallbacks, *(g for c in self.fallbacks.values() for g in c)}
        if unknown := sorted(named - groups):
            raise ValueError(
                f"unknown model group(s) {', '.join(unknown)}; known: {', '.join(sorted(groups))}"
            )
        if looping := sorted(g for g, targets in self.fallbacks.items() if g in targets):
            raise ValueError(f"model group(s) {', '.join(looping)} fall back to themselves")
        ids = [d.model_info.id for d in self.model_list]
        if len(ids) != len(set(ids)):
            raise ValueError("model_info.id must be unique across model_list")
        return self

    @property
    def chain(self) -> tuple[str, ...]:
        """The model groups in the order they are tried."""
        return (self.primary, *self.fallbacks.get(self.primary, ()))

    @classmethod
    def from_yaml(cls, path: Path | None = None) -> "GatewayConfig":
        """The YAML at `path` (default: gateway.yaml beside this module), primary from
        $TIPML_LLM_MODEL."""
        raw = yaml.safe_load((path or DEFAULT_CONFIG).read_text())
        if primary := os.environ.get(PRIMARY_ENV):
            groups = sorted({d["model_name"] for d in raw.get("model_list", [])})
            if primary not in groups:
                raise ValueError(
                    f"{PRIMARY_ENV}={primary!r} is not a model group; known: {', '.join(groups)}"
                )
            raw["primary"] = primary
        return cls.model_validate(raw)


class GenerateResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    text: str
    prompt_version: str
    model: str = Field(description="LiteLLM model of the deployment that answered")
    model_group: str
    latency_ms: float
    cost_usd: float | None = Field(description="from the deployment's per-token prices")
    format_ok: bool
    overlong: bool
    attempts: int = Field(description="model calls made, retries and fallbacks included")
    fallback_used: bool


def _describe(error: BaseException) -> str:
    status = getattr(error, "status_code", None)
    return type(error).__name__ + (f" {status}" if status else "")


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        register_rules_provider()
        self.config = config
        deployments = [
            (d, d.resolved_params(config.env_defaults))
            for d in config.model_list
            if d.model_name in config.chain
        ]
        self._models = {d.model_info.id: params["model"] for d, params in deployments}
        self._router = litellm.Router(
            model_list=[
                {
                    "model_name": d.model_name,
                    "litellm_params": params,
                    "model_info": d.model_info.model_dump(),
                }
                for d, params in deployments
            ],
            num_retries=0,
        )

    @classmethod
    def from_yaml(cls, path: Path | None = None) -> "Gateway":
        return cls(GatewayConfig.from_yaml(path))

    async def warm_up(self) -> None:
        """Run each group's path once with a mock answer, calling no model: LiteLLM imports
        much of itself on its first call (about a second), which the first request would
        otherwise spend inside its timeout."""
        for group in self.config.chain:
            await self._router.acompletion(
                model=group, messages=[{"role": "user", "content": "warm-up"}], mock_response="ok"
            )

    async def _attempt(self, group: str, messages: list[dict[str, Any]]) -> ModelResponse:
        timeout = self.config.timeout_s
        try:
            return await asyncio.wait_for(
                self._router.acompletion(model=group, messages=messages), timeout
            )
        except TimeoutError:
            raise litellm.Timeout(
                message=f"no answer within {timeout}s", model=group, llm_provider=group
            ) from None

    async def _ask_group(
        self, group: str, messages: list[dict[str, Any]], failures: list[str]
    ) -> tuple[ModelResponse | None, int]:
        """The group's answer (None if it failed) and the attempts it took, retries included."""
        attempts = 0
        while True:
            attempts += 1
            try:
                return await self._attempt(group, messages), attempts
            except Exception as error:  # any provider failure moves on; it must not escape
                failures.append(f"{group}: {_describe(error)}")
                log.warning("model group %s failed: %s", group, _describe(error))
                allowed_retries = get_num_retries_from_retry_policy(error, self.config.retry_policy)
                if attempts > (allowed_retries or 0):
                    return None, attempts

    async def generate(self, messages: list[dict[str, Any]], prompt_version: str) -> GenerateResult:
        """One tip from the first model group on the chain that answers within the contract.

        Raises GatewayError when every group failed or echoed the prompt.
        """
        started = time.perf_counter()
        chain = self.config.chain
        failures: list[str] = []
        attempts = 0
        may_reject_an_answer = True
        for position, group in enumerate(chain):
            response, used = await self._ask_group(group, messages, failures)
            attempts += used
            if response is None:
                continue
            check = check_output(response.choices[0].message.content or "")
            if check.echoes_prompt:
                failures.append(f"{group}: answer echoed the prompt")
                log.warning("model group %s echoed the prompt; its answer is dropped", group)
                continue
            broken = not check.format_ok or check.overlong
            if broken and may_reject_an_answer and position + 1 < len(chain):
                may_reject_an_answer = False
                failures.append(f"{group}: answer broke the output contract")
                log.warning(
                    "model group %s broke the output contract (format_ok=%s overlong=%s)",
                    group,
                    check.format_ok,
                    check.overlong,
                )
                continue
            hidden = response._hidden_params
            result = GenerateResult(
                text=check.text,
                prompt_version=prompt_version,
                model=self._models[hidden["model_id"]],
                model_group=group,
                latency_ms=(time.perf_counter() - started) * 1000,
                cost_usd=hidden.get("response_cost"),
                format_ok=check.format_ok,
                overlong=check.overlong,
                attempts=attempts,
                fallback_used=group != chain[0],
            )
            log.info(
                "tip generated: prompt=%s model=%s attempts=%d fallback=%s latency_ms=%.1f",
                prompt_version,
                result.model,
                attempts,
                result.fallback_used,
                result.latency_ms,
            )
            return result
        raise GatewayError(
            f"no model answered prompt {prompt_version} after {attempts} attempt(s): "
            + "; ".join(failures)
        )
