"""Who may call the service: an optional shared-secret bearer token.

Bound to 127.0.0.1 the service needs none. Behind a load balancer anyone who reaches the port
could write feedback into the training data and spend LLM money through /generate, so a
deployment sets a token and the recommender sends `Authorization: Bearer <token>`.

Where the token comes from, read once when the service module is imported:

- `TIPML_API_TOKEN`: the token itself.
- `TIPML_API_TOKEN_FILE`: a file holding it (a mounted secret), one trailing newline
  ignored. A file that cannot be read, or holds no token, stops the service at start-up with
  an error naming the path.
- Both set is a start-up error too, not a precedence rule: two claims about one secret (a
  stale variable next to a rotated file, say) should not be settled by a rule nobody
  remembers. The official Docker images treat their `*_FILE` variables the same way.
- Neither set (or set empty): no token, every route open, as before.

A token must be an RFC 6750 b64token (letters, digits, `-._~+/`, then `=` padding) of at
least MIN_TOKEN_CHARS characters: one a client cannot send in a header, or a guessable one,
is a start-up error. No error message and no log line contains the token.

What `ApiToken.admits` guarantees: only `Bearer <token>` passes, the scheme in any case
(RFC 7235 makes auth schemes case-insensitive), one space, then exactly the token. The token
is compared as SHA-256 digests with `hmac.compare_digest`: constant time, and its length
does not leak either. The token itself is not kept, only its digest.

Which routes need it is the HTTP boundary's part (service/http_boundary.py): every route
but the probes and the metrics, PUBLIC_PATHS.
"""

import hashlib
import hmac
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

log = logging.getLogger(__name__)
# BentoML's server logging passes only WARNING and up from loggers of its own choosing; the
# access mode is the one INFO line an operator must see, once per worker.
log.setLevel(logging.INFO)

TOKEN_ENV = "TIPML_API_TOKEN"
TOKEN_FILE_ENV = "TIPML_API_TOKEN_FILE"
MIN_TOKEN_CHARS = 16
# Kubernetes probes and Prometheus scrape without credentials; /healthz is BentoML's alias of
# /livez. Nothing else is public, so a route BentoML adds in a later version is protected.
PUBLIC_PATHS = ("/livez", "/healthz", "/readyz", "/metrics")
_B64TOKEN = re.compile(rb"[A-Za-z0-9._~+/-]+=*")
_SCHEME = b"bearer"
_TRAILING_NEWLINE = re.compile(rb"\r?\n\Z")


class TokenConfigError(RuntimeError):
    """The token settings are unusable; the service must not start on them."""


class ApiToken:
    """The shared secret, kept only as its digest."""

    __slots__ = ("_digest",)

    def __init__(self, token: bytes) -> None:
        if len(token) < MIN_TOKEN_CHARS:
            raise TokenConfigError(f"the API token is shorter than {MIN_TOKEN_CHARS} characters")
        if _B64TOKEN.fullmatch(token) is None:
            raise TokenConfigError(
                "the API token has characters a Bearer token cannot have "
                "(RFC 6750: letters, digits, - . _ ~ + /, then = padding)"
            )
        self._digest = hashlib.sha256(token).digest()

    def __repr__(self) -> str:
        return "ApiToken(<hidden>)"

    def admits(self, authorization: bytes | None) -> bool:
        """True only for `Bearer <token>` (the scheme in any case): the whole check of a request.

        A missing header is None; the scheme is compared openly, since it is no secret.
        """
        if authorization is None:
            return False
        scheme, space, credentials = authorization.partition(b" ")
        if not space or scheme.lower() != _SCHEME:
            return False
        return hmac.compare_digest(hashlib.sha256(credentials).digest(), self._digest)


def _configured(environ: Mapping[str, str]) -> tuple[bytes, str] | None:
    """The token's bytes and where they came from, or None when no token is configured."""
    value = environ.get(TOKEN_ENV)
    path = environ.get(TOKEN_FILE_ENV)
    if value and path:
        raise TokenConfigError(f"set {TOKEN_ENV} or {TOKEN_FILE_ENV}, not both")
    if value:
        return value.encode(), TOKEN_ENV
    if not path:
        return None
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise TokenConfigError(
            f"{TOKEN_FILE_ENV}: cannot read {path}: {exc.strerror or type(exc).__name__}"
        ) from None
    return _TRAILING_NEWLINE.sub(b"", content, count=1), f"{TOKEN_FILE_ENV}={path}"


def load_api_token(environ: Mapping[str, str] = os.environ) -> ApiToken | None:
    """The token the environment configures, or None for an open service."""
    if (configured := _configured(environ)) is None:
        return None
    token, source = configured
    try:
        return ApiToken(token)
    except TokenConfigError as exc:
        if source == TOKEN_ENV:
            raise
        raise TokenConfigError(f"{source}: {exc}") from None


def caller_headers(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The headers a caller configured like the service sends (`tipml demo`): the
    Authorization header when a token is set, else none."""
    if (configured := _configured(environ)) is None:
        return {}
    return {"Authorization": f"Bearer {configured[0].decode()}"}


def announce(token: ApiToken | None, public_paths: Iterable[str]) -> None:
    """Log which mode this worker serves in: the one line saying whether it is open."""
    if token is None:
        log.info(
            "no API token (%s, %s): every route is open to whoever reaches this port",
            TOKEN_ENV,
            TOKEN_FILE_ENV,
        )
    else:
        log.info(
            "API token set: every route but %s needs Authorization: Bearer <token>",
            ", ".join(public_paths),
        )
