"""The service's HTTP boundary: who may call, what a request must be before BentoML parses
it, what a rejected one leaves in the logs, and what the OpenAPI document says the errors
look like.

When an API token is configured (service/access.py), every HTTP request but those to the
probes and the metrics (/livez, /healthz, /readyz, /metrics) needs `Authorization: Bearer
<token>`, checked before anything else: a request without it gets a 401 with
`WWW-Authenticate: Bearer` and one body whatever was wrong (no header, another scheme, a
wrong token), before its body is read and before any other check could tell it something
about the route. The OpenAPI document and the Swagger UI (/docs.json, /, /schema.json, their
static files) are protected too: they map every route and field for whoever asks, and the
one client has the token anyway; a person reads them from a server run without one.

On POST to the service's API routes (/score, /generate, /feedback) the boundary guarantees:

- Only `application/json` (charset, if named, utf-8) reaches BentoML's parser; anything else
  is a 415 naming `content-type`. BentoML picks its parser by content type: multipart and
  form bodies crashed it (500), and a pickle body must never be unpickled from a client.
- A body over MAX_BODY_BYTES is a 413 before anything parses it: decided from
  Content-Length without reading a byte, or counted as a chunked body streams in.
- Nesting deeper than pydantic's JSON parser allows (it stops at 200 levels) is a 400 like
  any invalid JSON: nothing on the way recurses over a body.
- A request that fails validation (400) is logged once, at WARNING, with the endpoint, the
  failing field paths and pydantic's error types, and never a value. BentoML logs it at
  ERROR with the ValidationError's traceback, whose text quotes the input: task titles are
  user content, and bad input flooded the log. Server errors keep their traceback.
- GET /docs.json describes the error bodies these routes really return.

Every error the routes return has the shape of the 400s: `{"error": str, "detail":
[{"loc", "msg", "type"?}]}`; 401, 413 and 415 take it too, so a client reads `detail[].loc`
whatever went wrong.

WARNING, not INFO, for rejected requests: the one client is the recommender, which we run,
so a rejection means its contract and ours have drifted and someone should look; a line
per request, with no traceback, keeps a flood of them cheap.

The JSON hot path (/score) pays for one pass over the headers: a request with an accepted
content type and a Content-Length under the bound goes to BentoML with its `receive`
untouched, no copy of the body and no wrapper per message. Without a token that is all; with
one, a second pass finds the Authorization header and compares one digest.
"""

import inspect
import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import bentoml
from _bentoml_sdk.service import openapi as sdk_openapi
from bentoml._internal.server import http_app
from bentoml._internal.service.openapi.specification import MediaType, Response, Schema
from bentoml._internal.utils.uri import join_paths
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.access import PUBLIC_PATHS, ApiToken, announce, load_api_token
from service.bentoml_patches import on_checked_version

log = logging.getLogger(__name__)

# /score at every schema limit (500 tasks with 500-character titles, 100 candidates with
# 128-character ids) is 0.4 MB of ASCII JSON, 0.9 MB with every title in 3-byte UTF-8
# (tests/service/test_http_boundary.py sends the ASCII one). Only a body with all 500 titles at
# their limit in emoji or \u-escapes would pass 1 MiB; a real user's tasks are far from that.
MAX_BODY_BYTES = 1024 * 1024
MAX_LOGGED_ERRORS = 10
JSON_MEDIA_TYPE = b"application/json"
UTF8_CHARSETS = frozenset({b"utf-8", b"utf8"})
# A dict key in a loc is input (an unknown field's name, say): logged as this instead.
UNKNOWN_KEY = "<key>"

_ROUTES_SPREAD_THE_TABLE = "**error_responses"

S = TypeVar("S", bound=bentoml.Service[Any])


@dataclass(frozen=True)
class Rejection:
    """A response the boundary sends instead of the app's, encoded once."""

    status: int
    message: str
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()

    @classmethod
    def of(
        cls,
        status: int,
        message: str,
        loc: list[str],
        kind: str,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> "Rejection":
        detail = [{"loc": loc, "msg": message, "type": kind}]
        body = json.dumps({"error": message, "detail": detail}).encode()
        return cls(status, message, body, headers)


UNSUPPORTED_MEDIA_TYPE = Rejection.of(
    415,
    "send the body as application/json (charset, if given, utf-8)",
    ["content-type"],
    "unsupported_media_type",
)
BAD_CONTENT_LENGTH = Rejection.of(
    400, "content-length is not a byte count", ["content-length"], "invalid_content_length"
)
# One answer for every way of failing the check, so that a caller learns nothing from it.
UNAUTHORIZED = Rejection.of(
    401,
    "this service needs Authorization: Bearer <token>",
    ["authorization"],
    "unauthorized",
    headers=((b"www-authenticate", b"Bearer"),),
)


def is_json_content_type(value: bytes) -> bool:
    """`application/json`, optionally with a utf-8 charset: the one body BentoML should parse.

    BentoML ignores the charset and decodes UTF-8 (RFC 8259 allows nothing else), so a body
    declared in another charset would be misread rather than refused.
    """
    media_type, *parameters = value.split(b";")
    if media_type.strip().lower() != JSON_MEDIA_TYPE:
        return False
    for parameter in parameters:
        name, sep, charset = parameter.partition(b"=")
        if not name.strip() and not sep:
            continue  # "application/json;": an empty parameter says nothing
        if name.strip().lower() != b"charset":
            return False
        if charset.strip().strip(b'"').lower() not in UTF8_CHARSETS:
            return False
    return True


class HttpBoundary:
    """Pure ASGI middleware: 401 on every route but `public_paths` when there is an
    `api_token`, then 415 and 413 on the API routes, before BentoML reads the body.

    Pure ASGI rather than BaseHTTPMiddleware, which runs the app in a task and streams the
    response through memory streams: latency /score does not have to spare.

    Starlette builds its middleware once per app, when the app gets its first message (the
    lifespan's start-up): the worker says then which access mode it serves in.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Iterable[str],
        max_body_bytes: int = MAX_BODY_BYTES,
        api_token: ApiToken | None = None,
        public_paths: Iterable[str] = (),
    ) -> None:
        self.app = app
        self.routes = frozenset(routes)
        self.max_body_bytes = max_body_bytes
        self.too_large = Rejection.of(
            413, f"the body is larger than {max_body_bytes} bytes", [], "body_too_large"
        )
        self.api_token = api_token
        self.public_paths = frozenset(public_paths)
        announce(api_token, sorted(self.public_paths))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.api_token is not None
            and scope["type"] == "http"
            and scope["path"] not in self.public_paths
            and not self.api_token.admits(_authorization(scope))
        ):
            await _reject(scope, send, UNAUTHORIZED)
            return
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.routes:
            await self.app(scope, receive, send)
            return
        content_type: bytes | None = None
        content_length: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                # Two content types are two claims about one body: refuse rather than pick.
                content_type = value if content_type is None else b""
            elif name == b"content-length":
                content_length = value
        if content_type is None or not is_json_content_type(content_type):
            await _reject(scope, send, UNSUPPORTED_MEDIA_TYPE)
            return
        if content_length is not None:
            # The server (h11, httptools) enforces Content-Length framing, so the declared
            # length bounds the body and the stream needs no counting.
            if not content_length.isdigit():
                await _reject(scope, send, BAD_CONTENT_LENGTH)
            elif int(content_length) > self.max_body_bytes:
                await _reject(scope, send, self.too_large)
            else:
                await self.app(scope, receive, send)
            return
        try:
            body = await self._read_bounded(receive)
        except _ClientGone:
            return
        if body is None:
            await _reject(scope, send, self.too_large)
        else:
            await self.app(scope, _replay(body, receive), send)

    async def _read_bounded(self, receive: Receive) -> bytes | None:
        """A chunked body, counted as it arrives; None once it passes the bound."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _authorization(scope: Scope) -> bytes | None:
    """The Authorization header; b"" when there are two, which no token admits: two claims
    about one caller are refused rather than one picked."""
    found: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            found = value if found is None else b""
    return found


class _ClientGone(Exception):
    """The client disconnected before its body arrived: nobody to answer."""


async def _reject(scope: Scope, send: Send, rejection: Rejection) -> None:
    log.warning("%d %s %s: %s", rejection.status, scope["method"], scope["path"], rejection.message)
    await send(
        {
            "type": "http.response.start",
            "status": rejection.status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(rejection.body)).encode()),
                *rejection.headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": rejection.body})


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, as one message; then the connection's own messages
    (a disconnect, which streaming responses listen for)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed


class ValidationSummary(logging.Filter):
    """Turns BentoML's ERROR-with-traceback for a 400 into one WARNING line without values.

    A filter on the logger BentoML's `log_exception` writes to: the supported way to change
    a record before any handler sees it. Only a ValidationError of a request body is
    rewritten. BentoML answers any ValidationError with 400, also one raised inside an
    endpoint (a response model the code built wrong): that is a server bug, and keeps its
    level and traceback, as does everything else.
    """

    def __init__(self) -> None:
        super().__init__()
        self.input_titles: set[str] = set()
        self.field_names: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if not isinstance(error, ValidationError) or error.title not in self.input_titles:
            return True
        # log_exception logs "Exception on %s [%s]" % (path, method).
        args = record.args if isinstance(record.args, tuple) else ()
        where = f"{args[1]} {args[0]}" if len(args) == 2 else "request"
        record.msg = "400 %s: %d invalid: %s"
        record.args = (where, error.error_count(), self.summary(error))
        record.levelno = logging.WARNING
        record.levelname = logging.getLevelName(logging.WARNING)
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        return True

    def summary(self, error: ValidationError) -> str:
        """`field.path (error_type)` per error, the first MAX_LOGGED_ERRORS of them."""
        errors = error.errors(include_url=False, include_context=False, include_input=False)
        shown = [f"{self.field_path(e['loc'])} ({e['type']})" for e in errors[:MAX_LOGGED_ERRORS]]
        if len(errors) > MAX_LOGGED_ERRORS:
            shown.append(f"and {len(errors) - MAX_LOGGED_ERRORS} more")
        return ", ".join(shown)

    def field_path(self, loc: Sequence[int | str]) -> str:
        """`context.tasks[0].title`; a key the schemas do not declare is input: masked."""
        path = ""
        for part in loc:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                name = part if part in self.field_names else UNKNOWN_KEY
                path += f".{name}" if path else name
        return path or "<body>"


VALIDATION_SUMMARY = ValidationSummary()


def _property_names(schema: Any) -> Iterator[str]:
    """Every property name anywhere in a JSON schema, its $defs included."""
    if isinstance(schema, Mapping):
        properties = schema.get("properties")
        if isinstance(properties, Mapping):
            yield from properties
        for value in schema.values():
            yield from _property_names(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _property_names(value)


def summarize_validation_errors(input_models: Iterable[type[BaseModel]]) -> None:
    """Log a request body's failed validation as one line; the models' field names may
    appear in it, nothing else from the body."""
    for model in input_models:
        VALIDATION_SUMMARY.input_titles.add(model.__name__)
        VALIDATION_SUMMARY.field_names.update(_property_names(model.model_json_schema()))
    if VALIDATION_SUMMARY not in http_app.logger.filters:
        http_app.logger.addFilter(VALIDATION_SUMMARY)


def _error_schema(detail_required: bool, description: str) -> Schema:
    detail = Schema(
        type="object",
        properties={
            "loc": Schema(
                type="array",
                items=Schema(anyOf=[Schema(type="string"), Schema(type="integer")]),
                description="Where: field names and list indices into the body, or a header "
                "name; empty for the request as a whole.",
            ),
            "msg": Schema(type="string"),
            "type": Schema(type="string", description="A machine-readable error kind."),
        },
        required=["loc", "msg"],
    )
    return Schema(
        title="Error",
        type="object",
        description=description,
        properties={
            "error": Schema(type="string", description="A summary for people."),
            "detail": Schema(type="array", items=detail),
        },
        required=["error", "detail"] if detail_required else ["error"],
    )


def _error_response(description: str, detail_required: bool = True) -> Response:
    schema = _error_schema(detail_required, description)
    return Response(description=description, content={"application/json": MediaType(schema=schema)})


ERROR_RESPONSES: dict[int, Response] = {
    400: _error_response(
        "The body is not valid JSON or fails the request schema: one detail per failing "
        "field, with pydantic's error type."
    ),
    401: _error_response(
        "The service has an API token and the request did not send it as `Authorization: "
        "Bearer <token>` (the response's `WWW-Authenticate: Bearer` says so). The same body "
        "whether the header was missing, of another scheme or held a wrong token."
    ),
    413: _error_response(f"The body is larger than {MAX_BODY_BYTES} bytes; it was not read."),
    415: _error_response(
        "Content-Type is not application/json (a charset, if given, must be utf-8)."
    ),
    422: _error_response(
        "The body is valid but names something the service does not know, such as a "
        "prompt_version or an experiment."
    ),
    429: _error_response(
        "/generate only, when TIPML_GENERATE_RATE is set: this user_id has made its requests "
        "for now (`detail[].loc` names `user_id`); the `Retry-After` header says in how "
        "many seconds the next one is accepted."
    ),
    503: _error_response(
        "The service cannot answer now: a dependency it needs failed, or the worker is "
        "overloaded. Retry later. BentoML's own 503 carries no detail.",
        detail_required=False,
    ),
}


def describe_error_responses() -> bool:
    """Document the real error bodies in the OpenAPI spec; True when the spec has them.

    BentoML 1.4 spreads one module-level table, `error_responses`, into every API route's
    responses when it builds the spec (for GET /docs.json and for `bentoml build`). Its 400
    says `detail` is a string. Updating that table is the least invasive hook: no BentoML
    function is replaced. It is done only on the versions checked, and only while the route
    builder still reads the table.
    """
    table = sdk_openapi.error_responses
    if all(table.get(status) is response for status, response in ERROR_RESPONSES.items()):
        return True
    if not on_checked_version("the OpenAPI error responses"):
        return False
    if _ROUTES_SPREAD_THE_TABLE not in inspect.getsource(sdk_openapi._get_api_routes):
        log.info(
            "BentoML %s: the OpenAPI routes no longer read error_responses", bentoml.__version__
        )
        return False
    table.update(ERROR_RESPONSES)
    return True


def guard_http_boundary(service: S) -> S:
    """The boundary for a BentoML service: put above `@bentoml.service(...)`.

    A decorator because the service object exists only once `@bentoml.service` has run, and
    `add_asgi_middleware` is BentoML 1.4's supported way to put ASGI middleware in front of
    its routes. The API token is read here, when the service module is imported: that is
    `bentoml serve`'s first step, so an unusable token setting stops it before any worker
    starts, with a `TokenConfigError` naming what is wrong.
    """
    routes = [join_paths(service.path_prefix, api.route) for api in service.apis.values()]
    if not any(cls is HttpBoundary for cls, _ in service.middlewares):
        service.add_asgi_middleware(
            HttpBoundary,
            routes=routes,
            api_token=load_api_token(),
            public_paths=[join_paths(service.path_prefix, path) for path in PUBLIC_PATHS],
        )
    summarize_validation_errors(api.input_spec for api in service.apis.values())
    describe_error_responses()
    return service
