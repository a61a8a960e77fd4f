"""A version-guarded fix for a BentoML timer leak that costs the service its tail latency.

BentoML's TimeoutMiddleware (bentoml/_internal/server/http/traffic.py, 1.4.x up to at least
1.4.40) schedules `loop.call_later(timeout, ...)` for every request and never cancels it, so
each request's future, context and tracing objects stay alive for `traffic.timeout` seconds.
Under steady traffic that is tens of thousands of live objects, and full garbage collections
of them took 80-190 ms here: the p99. Cancelling the timer when the request ends fixes it.

The fix replaces the middleware's __call__ only on the versions it was measured on and only
if their source still has the leak; anything else is left as BentoML ships it.
`on_checked_version` is that version check, for every change tipml makes to BentoML's
internals (service/http_boundary.py uses it too).
"""

import asyncio
import inspect
import logging
from typing import Any

import bentoml
from bentoml._internal.server.http import traffic
from packaging.version import Version
from starlette.responses import JSONResponse

log = logging.getLogger(__name__)

FIRST_AFFECTED = Version("1.4.0")
LAST_CHECKED = Version("1.4.40")
_LEAKING_LINE = "loop.call_later(self.timeout, self._set_timer_out, waiter)"


async def _call_and_cancel_timer(self: traffic.TimeoutMiddleware, scope, receive, send) -> None:
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message: Any) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        await waiter
    except TimeoutError:
        if fut.cancel():
            resp = JSONResponse(
                {"error": f"Not able to process the request in {self.timeout} seconds"},
                status_code=504,
            )
            await resp(scope, receive, send)
    else:
        await fut
    finally:
        timer.cancel()


def on_checked_version(subject: str) -> bool:
    """True on the BentoML versions tipml's changes to its internals were checked on; on any
    other, `subject` is left as BentoML ships it, and the log says so."""
    version = Version(bentoml.__version__)
    if FIRST_AFFECTED <= version <= LAST_CHECKED:
        return True
    log.info("BentoML %s: %s left as shipped (checked up to %s)", version, subject, LAST_CHECKED)
    return False


def patch_timeout_middleware() -> bool:
    """Apply the fix where it is known to be needed; True when the running BentoML has it."""
    current = traffic.TimeoutMiddleware.__call__
    if current is _call_and_cancel_timer:
        return True
    if not on_checked_version("TimeoutMiddleware"):
        return False
    if _LEAKING_LINE not in inspect.getsource(current):
        log.info("BentoML %s: TimeoutMiddleware no longer has the timer leak", bentoml.__version__)
        return False
    traffic.TimeoutMiddleware.__call__ = _call_and_cancel_timer
    return True
