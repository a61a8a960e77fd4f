"""The HTTP boundary: content types, body sizes, nesting, the 400 log line and the OpenAPI
error bodies. The middleware and the log filter are tested alone first (no model needed),
then through the service in-process and once through `bentoml serve`."""

import asyncio
import json
import logging
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import Message, Receive, Scope, Send

from feature_repo.categories import TIP_CATEGORIES
from service.api.request import MAX_TASKS, MAX_TITLE_CHARS
from service.api.schemas import MAX_CANDIDATES
from service.http_boundary import (
    ERROR_RESPONSES,
    MAX_BODY_BYTES,
    HttpBoundary,
    ValidationSummary,
    describe_error_responses,
    is_json_content_type,
)
from tests.service.test_service import CANDIDATES, CONTEXT, NOW

ROUTES = ("/score", "/generate", "/feedback")
SECRET = "Quarterly-board-memo-XYZ"
TWO_MIB = b" " * (2 * 1024 * 1024)
DEEP = b"[" * 100_000 + b"]" * 100_000
SCORE_BODY = {"user_id": "u000003", "candidates": CANDIDATES[:3], "context": CONTEXT}
VALID_BODIES = {
    "/score": SCORE_BODY,
    "/generate": {"user_id": "u000003", "context": CONTEXT},
    "/feedback": {
        "event_id": "fb-boundary-1",
        "user_id": "u000003",
        "tip_id": "tip-1",
        "reaction": "accepted",
        "prompt_version": "v1",
        "timestamp": NOW.isoformat(),
    },
}
# A body that fails validation with user text where pydantic quotes it: an over-long title,
# an undeclared key named by the user, and a user_id the Id pattern refuses.
SECRET_BODY = SCORE_BODY | {
    "user_id": f"{SECRET} u1",
    "context": CONTEXT
    | {
        "tasks": [{"id": "s", "title": SECRET * 40, "priority": 1}],
        SECRET: "x",
    },
}
SECRET_PATHS = ("user_id (string_pattern_mismatch)", "context.tasks[0].title (string_too_long)")


# --- the middleware alone ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        (b"application/json", True),
        (b"Application/JSON", True),
        (b"application/json; charset=utf-8", True),
        (b'application/json;charset="UTF-8"', True),
        (b"application/json;", True),
        (b"application/json; charset=latin-1", False),
        (b"application/json; boundary=x", False),
        (b"application/jsonx", False),
        (b"multipart/form-data; boundary=x", False),
        (b"application/x-www-form-urlencoded", False),
        (b"application/vnd.bentoml+pickle", False),
        (b"text/plain", False),
        (b"", False),
    ],
)
def test_only_utf8_json_is_accepted(value, accepted):
    assert is_json_content_type(value) is accepted


class Recorder:
    """An ASGI app that reads the whole body the way Starlette does and answers 200."""

    def __init__(self) -> None:
        self.receive: Receive | None = None
        self.body = b""
        self.called = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.called, self.receive = True, receive
        while True:
            message = await receive()
            self.body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def run(
    app: Recorder, headers: dict[str, str], chunks: list[bytes], limit: int = 100
) -> tuple[int, dict[str, Any] | None, int, Receive]:
    """One POST /score through the boundary: status, JSON body, body messages read, receive."""
    messages = iter(
        [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]
    )
    reads = 0

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return next(messages, {"type": "http.disconnect"})

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/score",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(HttpBoundary(app, routes=["/score"], max_body_bytes=limit)(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent[1:])
    status = sent[0]["status"] if sent else 0
    return status, json.loads(body) if status != 200 and body else None, reads, receive


def test_json_under_the_bound_reaches_the_app_with_its_own_receive():
    app = Recorder()
    status, _, _, receive = run(
        app, {"content-type": "application/json", "content-length": "2"}, [b"{}"]
    )
    assert status == 200 and app.body == b"{}"
    assert app.receive is receive  # no wrapper, no copy: the hot path is a header check


def test_other_content_types_are_refused_before_the_app_runs():
    app = Recorder()
    status, body, reads, _ = run(app, {"content-type": "text/plain"}, [b"{}"])
    assert (status, reads, app.called) == (415, 0, False)
    assert body["detail"][0]["loc"] == ["content-type"] and body["error"]
    status, body, _, _ = run(Recorder(), {}, [b"{}"])  # no content type is not JSON either
    assert status == 415


def test_a_declared_length_over_the_bound_is_refused_unread():
    app = Recorder()
    headers = {"content-type": "application/json", "content-length": "101"}
    status, body, reads, _ = run(app, headers, [b"x" * 101])
    assert (status, reads, app.called) == (413, 0, False)
    assert body["detail"][0]["type"] == "body_too_large"
    bad = {"content-type": "application/json", "content-length": "ten"}
    assert run(Recorder(), bad, [b"{}"])[0] == 400


def test_a_chunked_body_is_counted_as_it_streams():
    app = Recorder()
    chunks = [b"x" * 40] * 10
    status, _, reads, _ = run(app, {"content-type": "application/json"}, chunks)
    assert (status, reads, app.called) == (413, 3, False)  # stops at the chunk past 100 bytes
    app = Recorder()
    status, _, _, _ = run(app, {"content-type": "application/json"}, [b"[1,", b"2]"])
    assert status == 200 and app.body == b"[1,2]"


def test_a_client_gone_mid_body_gets_no_answer():
    app = Recorder()
    status, _, _, _ = run(app, {"content-type": "application/json"}, [])
    assert (status, app.called) == (0, False)


# --- the 400 log line alone -------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(max_length=5)
    tasks: list[int]


def summary_of(*models: type[BaseModel]) -> ValidationSummary:
    summary = ValidationSummary()
    summary.input_titles.update(m.__name__ for m in models)
    summary.field_names.update(n for m in models for n in m.model_fields)
    return summary


def log_through(summary: ValidationSummary, error: BaseException) -> logging.LogRecord:
    """A record as BentoML's log_exception makes it, after the filter."""
    try:
        raise error
    except BaseException:
        record = logging.LogRecord(
            "bentoml", logging.ERROR, __file__, 1, "Exception on %s [%s]", ("/score", "POST"),
            sys.exc_info(),
        )  # fmt: skip
    assert summary.filter(record)
    return record


def test_a_validation_error_becomes_one_line_without_values():
    summary = summary_of(Body)
    try:
        Body.model_validate({"title": SECRET, "tasks": [1, SECRET], SECRET: 1})
    except ValidationError as exc:
        error = exc
    assert SECRET in str(error)  # what BentoML's traceback would have carried
    record = log_through(summary, error)
    line = logging.Formatter().format(record)
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert line == (
        "400 POST /score: 3 invalid: title (string_too_long), tasks[1] (int_parsing), "
        "<key> (extra_forbidden)"
    )


class Reply(BaseModel):
    score: float


def test_server_errors_keep_their_level_and_traceback():
    try:
        Reply.model_validate({"score": "high"})
    except ValidationError as exc:
        invalid_reply = exc  # the service's own bug, though BentoML answers it with 400
    for error in (RuntimeError("boom"), invalid_reply):
        record = log_through(summary_of(Body), error)
        assert record.levelno == logging.ERROR and record.exc_info is not None
        assert "Traceback" in logging.Formatter().format(record)


def test_many_errors_are_counted_not_listed():
    summary = summary_of(Body)
    try:
        Body.model_validate({"title": "ok", "tasks": ["a"] * 25})
    except ValidationError as exc:
        line = logging.Formatter().format(log_through(summary, exc))
    assert line.endswith("and 15 more") and line.count("int_parsing") == 10


def test_the_spec_fix_applies_once():
    assert describe_error_responses() and describe_error_responses()


# --- through the service ----------------------------------------------------------------


@pytest.fixture
def boundary_log(caplog) -> Iterator[pytest.LogCaptureFixture]:
    """Everything logged during a test, BentoML's loggers included even if they don't
    propagate to the root logger."""
    bentoml_logger = logging.getLogger("bentoml")
    # Once BentoML has configured logging in this process its logger stops propagating.
    own_handler = not bentoml_logger.propagate
    if own_handler:
        bentoml_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.DEBUG):
            yield caplog
    finally:
        if own_handler:
            bentoml_logger.removeHandler(caplog.handler)


def test_a_400_logs_one_warning_naming_fields_and_no_input(client, boundary_log):
    response = client.post("/score", json=SECRET_BODY)
    assert response.status_code == 400
    assert SECRET not in boundary_log.text and "Traceback" not in boundary_log.text
    [record] = [r for r in boundary_log.records if r.levelno >= logging.WARNING]
    line = record.getMessage()
    assert record.levelno == logging.WARNING and line.startswith("400 POST /score:")
    assert all(path in line for path in SECRET_PATHS)
    assert "context.<key> (extra_forbidden)" in line


def test_a_500_still_logs_its_traceback(client, boundary_log, monkeypatch):
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("scoring broke")

    monkeypatch.setattr("service.service.candidate_rows", broken)
    assert client.post("/score", json=SCORE_BODY).status_code == 500
    [record] = [r for r in boundary_log.records if r.levelno >= logging.WARNING]
    assert record.levelno == logging.ERROR and "RuntimeError: scoring broke" in boundary_log.text


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data; boundary=b", b'--b\r\nContent-Disposition: form-data; name="x"'),
        ("text/plain", b'{"user_id": "u1"}'),
        ("application/x-www-form-urlencoded", b"user_id=u1"),
        ("application/vnd.bentoml+pickle", b"\x80\x05N."),
        ("application/json; charset=latin-1", b"{}"),
    ],
)
def test_non_json_bodies_get_415_naming_content_type(client, route, content_type, body):
    response = client.post(route, content=body, headers={"content-type": content_type})
    assert response.status_code == 415
    assert response.json()["detail"][0]["loc"] == ["content-type"]


def test_a_real_multipart_upload_gets_415(client):
    response = client.post("/score", data={"user_id": "u1"}, files={"f": b"x"})
    assert response.status_code == 415


def test_json_with_a_charset_is_served(client):
    response = client.post(
        "/score",
        content=json.dumps(SCORE_BODY).encode(),
        headers={"content-type": "application/json; charset=UTF-8"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("route", ROUTES)
def test_a_2_mib_body_gets_413(client, route):
    json_type = {"content-type": "application/json"}
    assert client.post(route, content=TWO_MIB, headers=json_type).status_code == 413
    chunked = client.post(route, content=iter([TWO_MIB[:1000], TWO_MIB]), headers=json_type)
    assert chunked.status_code == 413 and chunked.json()["detail"][0]["type"] == "body_too_large"


def test_the_largest_valid_score_body_is_under_the_bound(client):
    due = (NOW + timedelta(days=1)).isoformat()
    task = {"title": "t" * MAX_TITLE_CHARS, "priority": 1, "due": due, "project": "p" * 100}
    body = {
        "user_id": "u" * 128,
        "candidates": [
            {"tip_id": f"{i:03d}".ljust(128, "x"), "category": TIP_CATEGORIES[i % 4]}
            for i in range(MAX_CANDIDATES)
        ],
        "context": CONTEXT
        | {"tasks": [task | {"id": f"{i:03d}".ljust(64, "i")} for i in range(MAX_TASKS)]},
    }
    raw = json.dumps(body).encode()
    assert len(raw) < MAX_BODY_BYTES / 2
    response = client.post("/score", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("route", ROUTES)
def test_deep_nesting_is_a_400(client, route):
    json_type = {"content-type": "application/json"}
    assert client.post(route, content=DEEP, headers=json_type).status_code == 400
    nested = b'{"user_id": "u1", "context": ' + DEEP + b"}"
    response = client.post(route, content=nested, headers=json_type)
    assert response.status_code == 400 and response.json()["detail"][0]["type"] == "json_invalid"


def test_the_spec_describes_the_error_bodies_as_they_are(client):
    spec = client.get("/docs.json").json()
    for route in ROUTES:
        responses = spec["paths"][route]["post"]["responses"]
        assert {"400", "413", "415", "422", "503"} <= set(responses)
    schema = spec["paths"]["/score"]["post"]["responses"]["400"]["content"]["application/json"][
        "schema"
    ]
    detail = schema["properties"]["detail"]
    assert detail["type"] == "array" and detail["items"]["type"] == "object"
    assert "loc" in detail["items"]["properties"]

    def documented(route: str, status: int) -> dict[str, Any]:
        response = spec["paths"][route]["post"]["responses"][str(status)]
        return response["content"]["application/json"]["schema"]

    json_type = {"content-type": "application/json"}
    unknown_experiment = VALID_BODIES["/generate"] | {"experiment": "no-such"}
    answers = [
        ("/score", client.post("/score", json=SCORE_BODY | {"user_id": ""})),
        ("/score", client.post("/score", content=b"{", headers=json_type)),
        ("/feedback", client.post("/feedback", content=b"x", headers={"content-type": "a/b"})),
        ("/generate", client.post("/generate", content=TWO_MIB, headers=json_type)),
        ("/generate", client.post("/generate", json=unknown_experiment)),
    ]
    assert sorted(r.status_code for _, r in answers) == [400, 400, 413, 415, 422]
    for route, response in answers:
        jsonschema.validate(response.json(), documented(route, response.status_code))
    assert set(ERROR_RESPONSES) <= {int(s) for s in spec["paths"]["/score"]["post"]["responses"]}


VALID_RAW = {route: json.dumps(body).encode() for route, body in VALID_BODIES.items()}
content_types = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "multipart/form-data; boundary=b",
        "application/x-www-form-urlencoded",
        "application/vnd.bentoml+pickle",
        "text/plain",
    ]
) | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@st.composite
def raw_bodies(draw: st.DrawFn, route: str) -> bytes:
    valid = VALID_RAW[route]
    return draw(
        st.binary(max_size=200)
        | st.integers(0, len(valid)).map(lambda n: valid[:n])  # truncated JSON
        | st.just(valid)
    )


@settings(max_examples=60, deadline=None)
@given(data=st.data(), content_type=content_types)
def test_no_content_type_or_body_makes_a_server_error(client, data, content_type):
    for route in ROUTES:
        body = data.draw(raw_bodies(route), label=route)
        response = client.post(route, content=body, headers={"content-type": content_type})
        assert response.status_code < 500, (route, content_type, body[:80], response.text)
