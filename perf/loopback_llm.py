"""A real HTTP server on 127.0.0.1 that speaks OpenAI chat completions and Ollama's /api/chat.

Each behaviour has its own path prefix, so one server plays every provider a test needs:

  /ok/v1/chat/completions     a good tip, with token usage
  /error/v1/chat/completions  HTTP 500
  /slow/v1/chat/completions   a good tip after `slow_s` seconds
  /bad/v1/chat/completions    an overlong tip with a preamble
  /echo/v1/chat/completions   the request's system message, as a model that leaks its prompt
  /say/v1/chat/completions    whatever the test set as `say`
  /ollama/api/chat            Ollama's non-streaming chat answer
  /ollama-slow/api/chat       the same after `slow_s` seconds
  /ollama-echo/api/chat       Ollama answering with the request's system message
  /judge/api/chat             Ollama answering as a judge: JUDGE_SCORES as JSON
  /garbled/api/chat           Ollama answering a judge with prose, not JSON
  /<any ollama>/api/show      Ollama's model details: parameter_size from OLLAMA_SIZES, or 404

Every request is recorded with its parsed JSON body.
"""

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

GOOD_TIP = "Block 25 minutes for your most urgent task and silence notifications until it's done."
BAD_TIP = "Here's a tip: " + "plan your day carefully and " * 10 + "you will do great."
PROMPT_TOKENS, COMPLETION_TOKENS = 42, 17
JUDGE_SCORES = {"relevance": 4, "actionability": 3, "tone": 5, "rationale": "fits the evening"}
GARBLED = "I would give this tip a solid four out of five overall."
# What /api/show reports per model; any other model is unknown to this "Ollama" (404).
OLLAMA_SIZES = {"llama3.2:3b": "3.2B", "qwen2.5:3b": "3.1B", "qwen2.5:7b": "7.6B"}
OLLAMA_BEHAVIOURS = ("ollama", "ollama-slow", "ollama-echo", "judge", "garbled")


@dataclass(frozen=True)
class Recorded:
    path: str
    body: dict[str, Any]


def _system_prompt(body: dict[str, Any]) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "system")


def _openai_answer(model: str, content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-loopback",
        "object": "chat.completion",
        "created": 1_790_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": COMPLETION_TOKENS,
            "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        },
    }


def _ollama_answer(model: str, content: str) -> dict[str, Any]:
    return {
        "model": model,
        "created_at": "2026-11-20T00:00:00Z",
        "message": {"role": "assistant", "content": content},
        "done": True,
        "done_reason": "stop",
        "prompt_eval_count": PROMPT_TOKENS,
        "eval_count": COMPLETION_TOKENS,
    }


class LoopbackLLM:
    def __init__(self, slow_s: float = 5.0) -> None:
        self.slow_s = slow_s
        self.say = GOOD_TIP  # what /say answers
        self.requests: list[Recorded] = []
        self._release = threading.Event()  # ends slow answers early at shutdown
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def api_base(self, behaviour: str) -> str:
        """The api_base a LiteLLM deployment uses to get `behaviour`."""
        suffix = "" if behaviour in OLLAMA_BEHAVIOURS else "/v1"
        return f"http://127.0.0.1:{self.port}/{behaviour}{suffix}"

    def requests_to(self, behaviour: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith(f"/{behaviour}/")]

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in separate writes: with Nagle's algorithm on, each
            # answer waits for the client's delayed ACK (~40 ms) and latencies measure that.
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                """Quiet: tests read `requests` instead."""

            def _reply(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _show(self, model: str) -> None:
                if model not in OLLAMA_SIZES:
                    self._reply(404, {"error": f"model '{model}' not found"})
                    return
                details = {"family": model.split(":")[0], "parameter_size": OLLAMA_SIZES[model]}
                self._reply(200, {"details": details, "model_info": {}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append(Recorded(self.path, body))
                model = body.get("model", "")
                behaviour = self.path.split("/")[1]
                try:
                    if behaviour in OLLAMA_BEHAVIOURS and self.path.endswith("/api/show"):
                        self._show(model)
                    elif behaviour in OLLAMA_BEHAVIOURS and self.path.endswith("/api/chat"):
                        if behaviour == "ollama-slow":
                            server._release.wait(server.slow_s)
                        if behaviour == "ollama-echo":
                            content = _system_prompt(body)
                        else:
                            content = {
                                "judge": json.dumps(JUDGE_SCORES),
                                "garbled": GARBLED,
                            }.get(behaviour, GOOD_TIP)
                        self._reply(200, _ollama_answer(model, content))
                    elif not self.path.endswith("/chat/completions"):
                        self._reply(404, {"error": {"message": f"no route {self.path}"}})
                    elif behaviour == "ok":
                        self._reply(200, _openai_answer(model, GOOD_TIP))
                    elif behaviour == "bad":
                        self._reply(200, _openai_answer(model, BAD_TIP))
                    elif behaviour == "echo":
                        self._reply(200, _openai_answer(model, _system_prompt(body)))
                    elif behaviour == "say":
                        self._reply(200, _openai_answer(model, server.say))
                    elif behaviour == "slow":
                        server._release.wait(server.slow_s)
                        self._reply(200, _openai_answer(model, GOOD_TIP))
                    else:
                        self._reply(500, {"error": {"message": "loopback failure"}})
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting, as a timing-out client does

        return Handler
