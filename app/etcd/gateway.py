"""The one client of etcd's v3 API, through etcd's own JSON gateway (POST /v3/kv/range, ...).
The publisher (app/etcd/v3.py) and the state stores (refresh tokens, login counters) use it.

Why the gateway and not a gRPC client: the gateway ships inside every etcd 3.x server (3.4
serves it under /v3/), so it needs no extra service; the Python gRPC clients are either
unmaintained (`etcd3`, last release 2020, breaks on protobuf >= 4) or pull in grpcio and
protobuf for a handful of calls. The HTTP client is urllib3 (which python-etcd, the v2 client,
is built on): with etcd as the state store every refresh grant is one of these calls, and
urllib3 takes half the CPU of httpx for one (docs/performance.md).

Every problem (no endpoint answers, not an etcd, etcd says no, unreadable TLS files) leaves
this module as one GatewayError, a line naming the cause and never the password; each user
turns it into its own error at its boundary (EtcdError, StateStoreError).
"""

from __future__ import annotations

import functools
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, TypeVar

import urllib3
from pydantic import SecretStr
from urllib3.exceptions import HTTPError, NewConnectionError, ReadTimeoutError, SSLError
from urllib3.exceptions import TimeoutError as HTTPTimeoutError

from app.etcd.handshake import NO_ANSWER, refused_certificate, unreadable_tls_file
from app.etcd.kv import Json, KeyValue, RangeResult, TxnResult, b64

T = TypeVar("T")
UNAUTHENTICATED = 16  # gRPC status of an unknown or expired auth token
# gRPC statuses by which a member says it cannot serve now (no quorum, no leader, a deadline
# passed: `etcdserver: request timed out`, `context deadline exceeded`): an outage of that
# member, and another may serve, not a refusal of the request.
_CANNOT_SERVE = frozenset({2, 4, 14})  # UNKNOWN, DEADLINE_EXCEEDED, UNAVAILABLE
NOT_GATEWAY = "not an etcd v3 gateway"
POOL_SIZE = 40  # connections kept per endpoint: as many as anyio runs blocking calls at once
_JSON_HEADERS = {"Content-Type": "application/json"}


log = logging.getLogger(__name__)


# Per list of endpoints, the one that answered when one before it did not: shared by every
# client of that etcd in the process (the counters', the refresh tokens'), which each paid the
# hung member's timeout and said so once.
_PREFERRED: dict[tuple[str, ...], str] = {}
_PREFERRED_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class Connection:
    """Where etcd is and how to reach it; the password is a SecretStr, masked in reprs."""

    endpoints: Sequence[str]
    timeout: float
    username: str | None = None
    password: SecretStr | None = None
    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


class GatewayError(Exception):
    """etcd could not serve this call; the message says which endpoint and why."""


class GatewayClosedError(GatewayError):
    """This client was closed (the service stops): not an outage of etcd."""


class _UnreachableError(Exception):
    """This endpoint is not a usable etcd; try the next one."""


class _RefusedError(Exception):
    """etcd answered and said no (credentials, permissions): the next endpoint would too."""


class GatewayRefusedError(GatewayError):
    """etcd answered and refused this call (a permission, a full database): etcd is up, and
    other calls may well succeed, so it is not an outage of it."""


class _EtcdSaidNoError(_RefusedError):
    """etcd's own refusal (a gRPC status), as opposed to one of ours (TLS files, closed)."""


class _TokenRejectedError(_EtcdSaidNoError):
    """etcd no longer knows our token (simple tokens expire, 5 minutes by default)."""


class GatewayClient:
    """The v3 calls, on the first endpoint that answers. Thread-safe. A pool of kept
    connections per endpoint, made at its first call, so bad TLS files fail that call, not
    start-up.
    """

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._endpoints = [endpoint.rstrip("/") for endpoint in connection.endpoints]
        self._tokens: dict[str, str] = {}  # per endpoint: a simple token is valid on one member
        self._cluster = tuple(self._endpoints)  # the key of what _PREFERRED learnt of them
        self._lock = threading.Lock()
        # per endpoint: its connections, and the path its URL puts before /v3/...
        self._pools: dict[str, tuple[urllib3.HTTPConnectionPool, str]] = {}
        self._closed = False
        # urllib3 logs a dropped kept connection at WARNING: it reconnects; failures are ours.
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

    @property
    def where(self) -> str:
        return f"etcd v3 at {', '.join(self.connection.endpoints)}"

    def close(self) -> None:
        with self._lock:
            pools, self._closed = list(self._pools.values()), True
            self._pools.clear()
        for pool, _ in pools:
            pool.close()

    def range(self, key: bytes, range_end: bytes | None = None) -> RangeResult:
        request = {"key": b64(key)}
        if range_end is not None:
            request["range_end"] = b64(range_end)
        answer = self._post("/v3/kv/range", request)
        kvs = [KeyValue.from_json(kv) for kv in answer.get("kvs") or []]
        return RangeResult(kvs, _revision(answer))

    def put(self, key: bytes, value: bytes) -> int:
        """The store's revision after the put."""
        return _revision(self._post("/v3/kv/put", {"key": b64(key), "value": b64(value)}))

    def txn(self, compare: list[Json], success: list[Json]) -> TxnResult:
        answer = self._post("/v3/kv/txn", {"compare": compare, "success": success})
        # A failed compare leaves `succeeded` out: false is the default.
        succeeded = bool(answer.get("succeeded", False))
        return TxnResult(succeeded, list(answer.get("responses", [])), _revision(answer))

    def grant_lease(self, ttl: int) -> int:
        """A lease of `ttl` seconds: keys put with it vanish when it runs out."""
        return int(self._post("/v3/lease/grant", {"TTL": str(ttl)})["ID"])

    def watch(self, key: bytes, start_revision: int, timeout: float) -> bool:
        """True at the first change of `key` from `start_revision` on (or when that history
        is compacted away: we cannot tell, so look again); False after `timeout` without one."""
        request = {"create_request": {"key": b64(key), "start_revision": str(start_revision)}}
        watch = functools.partial(self._watch, request=request, timeout=timeout)
        return self._on_endpoints(lambda base: self._logged_in(base, watch))

    def _post(self, path: str, payload: Json) -> Json:
        send = functools.partial(self._send, path=path, payload=payload)
        return self._on_endpoints(lambda base: self._logged_in(base, send))

    def _on_endpoints(self, action: Callable[[str], T]) -> T:
        """`action` on the first endpoint that answers, beginning with the one that answered
        last; the one place errors are converted. In the configured order every time, a hung
        first member cost every call its timeout (5 s), and nothing said so."""
        problems: list[str] = []
        for base in self._order():
            try:
                result = action(base)
            except (HTTPError, _UnreachableError) as exc:
                problems.append(f"{base}: {_explain_transport(exc)}")
                continue
            except _EtcdSaidNoError as exc:
                raise GatewayRefusedError(str(exc)) from exc
            except _RefusedError as exc:
                raise GatewayError(str(exc)) from exc
            if problems:  # an endpoint before it did not answer
                self._prefer(base, problems)
            return result
        raise GatewayError("; ".join(problems))

    def _order(self) -> list[str]:
        preferred = _PREFERRED.get(self._cluster)
        if preferred is None:
            return self._endpoints
        return [preferred, *(base for base in self._endpoints if base != preferred)]

    def _prefer(self, base: str, problems: list[str]) -> None:
        with _PREFERRED_LOCK:
            changed = _PREFERRED.get(self._cluster) != base
            _PREFERRED[self._cluster] = base
        if changed:
            log.warning("etcd: %s; asking %s first from now on", "; ".join(problems), base)

    def _logged_in(self, base: str, action: Callable[[str], T]) -> T:
        try:
            return action(base)
        except _TokenRejectedError:
            self._tokens.pop(base, None)  # expired: log in again, once
            return action(base)

    def _send(self, base: str, path: str, payload: Json) -> Json:
        headers = self._auth_headers(base)
        return _answer(path, self._request(base, path, payload, headers))

    def _request(
        self,
        base: str,
        path: str,
        payload: Json,
        headers: dict[str, str],
        *,
        read_timeout: float | None = None,
    ) -> urllib3.BaseHTTPResponse:
        """POST `payload` as JSON; the answer read whole, unless `read_timeout` is given: then
        a stream, read as it comes (the caller closes it)."""
        pool, prefix = self._pool(base)
        timeout = urllib3.Timeout(
            connect=self.connection.timeout, read=read_timeout or self.connection.timeout
        )
        return pool.urlopen(
            "POST",
            prefix + path,
            body=json.dumps(payload).encode("utf-8"),
            headers={**_JSON_HEADERS, **headers},
            retries=False,
            redirect=False,
            timeout=timeout,
            preload_content=read_timeout is None,
        )

    def _auth_headers(self, base: str) -> dict[str, str]:
        """The gateway takes the bare token; none without a configured user."""
        connection = self.connection
        if connection.username is None or connection.password is None:
            return {}
        token = self._tokens.get(base)
        if token is None:
            secret = connection.password.get_secret_value()
            login = {"name": connection.username, "password": secret}
            path = "/v3/auth/authenticate"
            try:
                answer = _answer(path, self._request(base, path, login, {}))
            except _EtcdSaidNoError as exc:  # the login refused: no call can succeed
                raise _RefusedError(str(exc)) from None
            token = answer.get("token")
            if not isinstance(token, str):
                raise _RefusedError("no token in the authenticate answer")
            self._tokens[base] = token
        return {"Authorization": token}

    def _watch(self, base: str, request: Json, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        headers = self._auth_headers(base)
        response = self._request(base, "/v3/watch", request, headers, read_timeout=timeout)
        try:
            return _first_change(response, deadline)
        except HTTPTimeoutError:
            return False
        except ValueError as exc:
            raise _UnreachableError(f"{NOT_GATEWAY} (the watch stream is not JSON)") from exc
        finally:
            # The stream never ends by itself: close its connection rather than hand a
            # half-read one back to the pool.
            response.close()
            response.release_conn()

    def _pool(self, base: str) -> tuple[urllib3.HTTPConnectionPool, str]:
        """The endpoint's pool, and the path the endpoint's URL puts before /v3/..."""
        with self._lock:
            if self._closed:
                raise GatewayClosedError("the etcd client is closed")
            kept = self._pools.get(base)
            if kept is None:
                kept = self._pools[base] = _new_pool(base, self.connection)
        return kept


def _new_pool(base: str, connection: Connection) -> tuple[urllib3.HTTPConnectionPool, str]:
    options: dict[str, object] = {"maxsize": POOL_SIZE}
    if base.startswith("https:"):
        options["ssl_context"] = _tls_context(connection)
    pool = urllib3.connection_from_url(base, **options)
    return pool, urllib3.util.parse_url(base).path or ""


def _tls_context(connection: Connection) -> ssl.SSLContext:
    """Verifies etcd against `ca_cert`, else the system's CAs; presents the client pair."""
    unreadable = unreadable_tls_file(connection)
    if unreadable is not None:
        raise _RefusedError(f"cannot load the TLS files: {unreadable}")
    try:
        cafile = str(connection.ca_cert) if connection.ca_cert is not None else None
        context = ssl.create_default_context(cafile=cafile)
        if connection.client_cert is not None and connection.client_key is not None:
            context.load_cert_chain(str(connection.client_cert), str(connection.client_key))
    except (OSError, ssl.SSLError) as exc:
        raise _RefusedError(f"cannot load the TLS files: {exc}") from exc
    return context


def _answer(path: str, response: urllib3.BaseHTTPResponse) -> Json:
    body = _json(response.data)
    if response.status == 200 and isinstance(body.get("header"), dict):
        return body
    if "code" in body and "message" in body:  # a gRPC status from etcd itself
        if body["code"] in _CANNOT_SERVE:
            raise _UnreachableError(f"etcd could not serve it: {body['message']}")
        refused = _TokenRejectedError if body["code"] == UNAUTHENTICATED else _EtcdSaidNoError
        raise refused(f"etcd refused the request: {body['message']}")
    raise _UnreachableError(f"{NOT_GATEWAY} (POST {path} answered HTTP {response.status})")


def _first_change(response: urllib3.BaseHTTPResponse, deadline: float) -> bool:
    if response.status != 200:
        raise _UnreachableError(f"watch answered HTTP {response.status}")
    for line in response:
        result = json.loads(line).get("result", {}) if line.strip() else {}
        if result.get("events") or result.get("compact_revision"):
            return True
        if result.get("canceled"):
            _watch_refused(str(result.get("cancel_reason", "")))
        if time.monotonic() >= deadline:
            return False
    return False


def _watch_refused(reason: str) -> NoReturn:
    # The watch stream says no in its first message (HTTP 200), not with a gRPC status.
    refused = _TokenRejectedError if "invalid auth token" in reason else _EtcdSaidNoError
    raise refused(f"etcd refused the watch: {reason}")


def _json(data: bytes) -> Json:
    try:
        body = json.loads(data)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _revision(answer: Json) -> int:
    return int(answer["header"].get("revision", 0))


def _explain_transport(exc: Exception) -> str:
    if isinstance(exc, NewConnectionError):  # before timeouts: urllib3 makes it one of them
        text = str(exc)
        return "connection refused" if "refused" in text.lower() else f"cannot connect ({text})"
    if isinstance(exc, ReadTimeoutError):
        return NO_ANSWER
    if isinstance(exc, HTTPTimeoutError):
        return "cannot connect (timed out)"
    if isinstance(exc, SSLError) and (refused := refused_certificate(str(exc))):
        return refused
    return str(exc) or type(exc).__name__
