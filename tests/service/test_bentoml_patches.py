"""BentoML's TimeoutMiddleware must not keep a timer per finished request alive, and an API
method's caller is built once per service instance, not per request."""

import asyncio

import bentoml
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from pydantic import Field

from service.bentoml_patches import cache_local_callers, patch_timeout_middleware

REQUESTS = 200


async def ok_app(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def serve_requests() -> int:
    """Timers still scheduled on the loop after REQUESTS requests have completed."""
    middleware = TimeoutMiddleware(ok_app, timeout=60)

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        return None

    for _ in range(REQUESTS):
        await middleware({"type": "http", "path": "/score"}, receive, send)
    loop = asyncio.get_running_loop()
    return sum(
        1
        for handle in loop._scheduled  # the loop's pending call_later timers
        if not handle.cancelled() and "_set_timer_out" in repr(handle._callback)
    )


def test_finished_requests_leave_no_timers_behind():
    assert patch_timeout_middleware(), "the fix should apply to the BentoML this project pins"
    assert asyncio.run(serve_requests()) == 0


def test_the_fix_is_idempotent():
    assert patch_timeout_middleware() and patch_timeout_middleware()


class Echo:
    @bentoml.api
    def echo(self, text: str = Field(default="hi")) -> str:
        return f"{id(self)}:{text}"


def test_an_api_method_builds_its_caller_once_per_instance():
    assert cache_local_callers(), "the cache should apply to the BentoML this project pins"
    one, two = Echo(), Echo()
    assert one.echo.local is one.echo.local
    assert one.echo.local is not two.echo.local
    # The cached caller is the one BentoML builds: defaults from Field still apply.
    assert one.echo() == f"{id(one)}:hi"
    assert two.echo(text="x") == f"{id(two)}:x"
