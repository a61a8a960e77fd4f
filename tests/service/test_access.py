"""The API token alone: where it is read from, what `admits` lets through (a property over
arbitrary header values), and the boundary's 401 in front of an app that never runs. The
same through `bentoml serve` is in tests/service/test_serve_access.py."""

import asyncio
import json
import logging
import string
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.types import Message

from service.access import (
    MIN_TOKEN_CHARS,
    PUBLIC_PATHS,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    ApiToken,
    TokenConfigError,
    announce,
    caller_headers,
    load_api_token,
)
from service.http_boundary import HttpBoundary
from tests.service.test_http_boundary import Recorder

TOKEN = "tipml-test-token-0123456789abcdef"
B64TOKEN_CHARS = string.ascii_letters + string.digits + "-._~+/"


# --- where the token comes from ------------------------------------------------------------


def test_no_variable_means_no_token():
    assert load_api_token({}) is None
    assert load_api_token({TOKEN_ENV: "", TOKEN_FILE_ENV: ""}) is None  # set empty = unset


def test_the_variable_holds_the_token():
    token = load_api_token({TOKEN_ENV: TOKEN})
    assert token is not None and token.admits(f"Bearer {TOKEN}".encode())


@pytest.mark.parametrize("source", ["variable", "file"])
def test_a_caller_configured_like_the_service_sends_what_it_admits(tmp_path, source):
    path = tmp_path / "token"
    path.write_text(f"{TOKEN}\n")
    environ = {TOKEN_ENV: TOKEN} if source == "variable" else {TOKEN_FILE_ENV: str(path)}
    [(name, value)] = caller_headers(environ).items()
    assert name == "Authorization"
    assert load_api_token(environ).admits(value.encode())
    assert caller_headers({}) == {}


@pytest.mark.parametrize("ending", ["", "\n", "\r\n"])
def test_the_file_holds_the_token_with_one_newline_ignored(tmp_path, ending):
    path = tmp_path / "token"
    path.write_bytes(f"{TOKEN}{ending}".encode())
    token = load_api_token({TOKEN_FILE_ENV: str(path)})
    assert token is not None and token.admits(f"Bearer {TOKEN}".encode())


def test_a_file_that_cannot_be_read_is_an_error_naming_its_path(tmp_path):
    missing = tmp_path / "mounted" / "token"
    with pytest.raises(TokenConfigError, match=str(missing)) as raised:
        load_api_token({TOKEN_FILE_ENV: str(missing)})
    assert TOKEN_FILE_ENV in str(raised.value)
    with pytest.raises(TokenConfigError, match=str(tmp_path)):
        load_api_token({TOKEN_FILE_ENV: str(tmp_path)})  # a directory


@pytest.mark.parametrize(
    "content",
    [b"", b"\n", f"{TOKEN}\n\n".encode(), f"{TOKEN} x".encode(), b"short-token", "ü" * 20],
    ids=["empty", "only-newline", "two-newlines", "space", "short", "non-ascii"],
)
def test_a_file_without_a_usable_token_is_an_error_that_does_not_quote_it(tmp_path, content):
    path = tmp_path / "token"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(TokenConfigError, match=str(path)) as raised:
        load_api_token({TOKEN_FILE_ENV: str(path)})
    assert TOKEN not in str(raised.value) and "short-token" not in str(raised.value)


def test_both_set_is_an_error_not_a_precedence(tmp_path):
    path = tmp_path / "token"
    path.write_text(TOKEN)
    with pytest.raises(TokenConfigError, match="not both"):
        load_api_token({TOKEN_ENV: TOKEN, TOKEN_FILE_ENV: str(path)})


@pytest.mark.parametrize(
    "value", ["a" * (MIN_TOKEN_CHARS - 1), "has space in it 123", "tok\ten" * 4]
)
def test_a_variable_that_is_no_bearer_token_is_an_error(value):
    with pytest.raises(TokenConfigError) as raised:
        load_api_token({TOKEN_ENV: value})
    assert value not in str(raised.value)


def test_the_token_is_not_shown():
    assert TOKEN not in repr(ApiToken(TOKEN.encode()))


def test_the_mode_is_logged_once_without_the_token(caplog):
    with caplog.at_level(logging.INFO, logger="service.access"):
        announce(ApiToken(TOKEN.encode()), PUBLIC_PATHS)
        announce(None, PUBLIC_PATHS)
    token_line, open_line = (r.getMessage() for r in caplog.records)
    assert "API token set" in token_line and "/metrics" in token_line
    assert "no API token" in open_line
    assert TOKEN not in caplog.text


# --- what passes ---------------------------------------------------------------------------

tokens = st.text(B64TOKEN_CHARS, min_size=MIN_TOKEN_CHARS, max_size=48).map(str.encode)


@st.composite
def near_misses(draw: st.DrawFn, token: bytes) -> bytes:
    """Header values one edit away from right: scheme, separator or credentials."""
    scheme = draw(st.sampled_from([b"Bearer", b"bearer", b"BEARER", b"Basic", b"Token", b""]))
    separator = draw(st.sampled_from([b" ", b"  ", b"\t", b"", b" \t", b"="]))
    position = draw(st.integers(0, len(token) - 1))
    replacement = draw(st.sampled_from(B64TOKEN_CHARS)).encode()
    credentials = draw(
        st.sampled_from(
            [
                token,
                token + b"=",
                token[:-1],
                token.swapcase(),
                b" " + token,
                token + b" ",
                token[:position] + replacement + token[position + 1 :],
                b"",
            ]
        )
    )
    return scheme + separator + credentials


@given(data=st.data(), token=tokens)
def test_only_bearer_and_the_exact_token_pass(data, token):
    api_token = ApiToken(token)
    values = [
        b"Bearer " + token,
        b"bearer " + token,
        b"Bearer",
        b"",
        None,
        data.draw(st.binary(max_size=80), label="arbitrary"),
        data.draw(near_misses(token), label="near miss"),
    ]
    for value in values:
        exact = value is not None and value[:7].lower() == b"bearer " and value[7:] == token
        assert api_token.admits(value) is exact, value


# --- the boundary in front of an app -------------------------------------------------------


def call(
    boundary: HttpBoundary, method: str, path: str, headers: list[tuple[str, str]]
) -> tuple[int, dict[str, str], bytes, int]:
    """One request through the boundary: status, response headers, body, messages read."""
    reads = 0

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"{}", "more_body": False}

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.encode(), v.encode()) for k, v in headers],
    }
    asyncio.run(boundary(scope, receive, send))
    response_headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
    return (
        sent[0]["status"],
        response_headers,
        b"".join(m.get("body", b"") for m in sent[1:]),
        reads,
    )


def guarded(app: Recorder) -> HttpBoundary:
    return HttpBoundary(
        app, routes=["/score"], api_token=ApiToken(TOKEN.encode()), public_paths=PUBLIC_PATHS
    )


JSON = ("content-type", "application/json")
REFUSED = [
    [],
    [("authorization", f"Bearer {TOKEN}x")],
    [("authorization", f"Basic {TOKEN}")],
    [("authorization", TOKEN)],
    [("authorization", "Bearer")],
    [("authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {TOKEN}")],
]


def test_a_request_without_the_token_is_refused_unread_with_one_body():
    bodies = set()
    for headers in REFUSED:
        app = Recorder()
        status, response_headers, body, reads = call(
            guarded(app), "POST", "/score", [JSON, *headers]
        )
        assert (status, reads, app.called) == (401, 0, False), headers
        assert response_headers["www-authenticate"] == "Bearer"
        bodies.add(body)
    [body] = bodies
    error = json.loads(body)
    assert error["detail"] == [
        {"loc": ["authorization"], "msg": error["error"], "type": "unauthorized"}
    ]
    assert TOKEN not in body.decode()


def test_the_token_is_checked_before_the_content_type():
    status, _, _, _ = call(guarded(Recorder()), "POST", "/score", [("content-type", "text/plain")])
    assert status == 401  # not 415: an unknown caller learns nothing about the route


def test_the_token_opens_api_routes_and_the_docs():
    right = ("authorization", f"Bearer {TOKEN}")
    app = Recorder()
    assert call(guarded(app), "POST", "/score", [JSON, right])[0] == 200 and app.called
    assert call(guarded(Recorder()), "GET", "/docs.json", [right])[0] == 200
    for path in ("/docs.json", "/", "/schema.json", "/livez/", "/anything"):
        assert call(guarded(Recorder()), "GET", path, [])[0] == 401, path


@pytest.mark.parametrize("path", PUBLIC_PATHS)
def test_probes_and_metrics_need_no_token(path):
    assert call(guarded(Recorder()), "GET", path, [])[0] == 200


def test_without_a_token_nothing_is_asked():
    app = Recorder()
    boundary = HttpBoundary(app, routes=["/score"], public_paths=PUBLIC_PATHS)
    assert call(boundary, "POST", "/score", [JSON])[0] == 200 and app.called
    assert call(boundary, "GET", "/docs.json", [])[0] == 200
