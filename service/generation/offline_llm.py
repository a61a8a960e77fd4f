"""LiteLLM custom providers that answer in process from a function of the messages.

The offline providers (the `rules` tip writer here, the benchmark's `rules-judge`) differ only
in what they write; this is the LiteLLM side they share: sync and async completion, and
registration under a provider name (`<provider>/<anything>` then routes to the function).
"""

from collections.abc import Callable
from typing import Any

import litellm
from litellm import CustomLLM, ModelResponse

Messages = list[dict[str, Any]]


def last_user_text(messages: Messages) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else ""
    return ""


class FunctionLLM(CustomLLM):
    """Answers every completion with `answer(messages)`."""

    def __init__(self, answer: Callable[[Messages], str]) -> None:
        super().__init__()
        self._answer_text = answer

    def _answer(
        self, model: str, messages: Messages, model_response: ModelResponse
    ) -> ModelResponse:
        model_response.choices[0].message.content = self._answer_text(messages)
        model_response.model = model
        return model_response

    def completion(
        self, *, model: str, messages: Messages, model_response: ModelResponse, **_: object
    ) -> ModelResponse:
        return self._answer(model, messages, model_response)

    async def acompletion(
        self, *, model: str, messages: Messages, model_response: ModelResponse, **_: object
    ) -> ModelResponse:
        return self._answer(model, messages, model_response)


def register_provider(provider: str, answer: Callable[[Messages], str]) -> None:
    """Route `<provider>/...` models to `answer` in this process; calling it again changes
    nothing."""
    if all(item["provider"] != provider for item in litellm.custom_provider_map):
        litellm.custom_provider_map = [
            *litellm.custom_provider_map,
            {"provider": provider, "custom_handler": FunctionLLM(answer)},
        ]
