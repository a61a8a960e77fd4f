"""Version-guarded fixes for two BentoML costs on every request: a timer leak that cost the
service its tail latency, and a signature recomputed per call.

BentoML's TimeoutMiddleware (bentoml/_internal/server/http/traffic.py, 1.4.x up to at least
1.4.40) schedules `loop.call_later(timeout, ...)` for every request and never cancels it, so
each request's future, context and tracing objects stay alive for `traffic.timeout` seconds.
Under steady traffic that is tens of thousands of live objects, and full garbage collections
of them took 80-190 ms here: the p99. Cancelling the timer when the request ends fixes it.

The fix replaces the middleware's __call__ only on the versions it was measured on and only
if their source still has the leak; anything else is left as BentoML ships it.

BentoML's server reaches an API method through `APIMethod.__get__` on every request, which
builds the method's local caller anew, `inspect.signature` included: ~0.05 ms of /score's
~1.7 (perf/score_profile.md). The caller depends only on the method and the service instance,
so `cache_local_callers` keeps the first one per instance; same guard as above.
`on_checked_version` is that version check, for every change tipml makes to BentoML's
internals (service/http_boundary.py uses it too).
"""

import asyncio
import inspect
import logging
import weakref
from collections.abc import Callable
from typing import Any

import bentoml
from _bentoml_sdk.method import APIMethod
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


def _replace(owner: type, name: str, replacement: Callable[..., Any], marker: str) -> bool:
    """`owner.name` becomes `replacement` on a checked version whose source of it still holds
    `marker` (the line the replacement exists for); True when the replacement is in place."""
    current = getattr(owner, name)
    if current is replacement:
        return True
    subject = f"{owner.__name__}.{name}"
    if not on_checked_version(subject):
        return False
    if marker not in inspect.getsource(current):
        log.info("BentoML %s: %s no longer has %r", bentoml.__version__, subject, marker)
        return False
    setattr(owner, name, replacement)
    return True


def patch_timeout_middleware() -> bool:
    """Apply the fix where it is known to be needed; True when the running BentoML has it."""
    return _replace(traffic.TimeoutMiddleware, "__call__", _call_and_cancel_timer, _LEAKING_LINE)


_SIGNATURE_PER_CALL = "func_sig = inspect.signature(self.func)"
_build_local_caller = APIMethod._local_call
_local_callers: weakref.WeakKeyDictionary[object, dict[str, Callable[..., Any]]] = (
    weakref.WeakKeyDictionary()
)


def _cached_local_call(self: APIMethod, instance: object) -> Callable[..., Any]:
    callers = _local_callers.setdefault(instance, {})
    caller = callers.get(self.name)
    if caller is None:
        caller = callers[self.name] = _build_local_caller(self, instance)
    return caller


def cache_local_callers() -> bool:
    """Build each API method's local caller once per service instance; True when in effect."""
    return _replace(APIMethod, "_local_call", _cached_local_call, _SIGNATURE_PER_CALL)
