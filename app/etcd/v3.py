"""The v3 API through etcd's own JSON gateway (grpc-gateway: POST /v3/kv/range, /v3/kv/txn...).

Why the gateway over httpx and not a gRPC client: the gateway ships inside every etcd 3.x
server (3.4 serves it under /v3/), so it needs no extra service; the Python gRPC clients
are either unmaintained (`etcd3`, last release 2020, breaks on protobuf >= 4) or pull in
grpcio and protobuf for five calls. httpx is a maintained, typed, pure-Python HTTP client.
Keys and values travel base64-encoded; 64-bit numbers arrive as JSON strings.
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import httpx

from app.errors import EtcdConflictError, EtcdError
from app.etcd.record import Snapshot
from app.settings_sections import EtcdSettings

T = TypeVar("T")


class GatewayBackend:
    """One key through the v3 JSON gateway; endpoints are tried in order."""

    def __init__(self, settings: EtcdSettings) -> None:
        self._settings = settings
        self._key = _b64(settings.key)
        # httpx logs every request at INFO: one line per check is noise; failures are ours.
        logging.getLogger("httpx").setLevel(logging.WARNING)

    @property
    def where(self) -> str:
        return f"etcd v3 at {', '.join(self._settings.endpoints)} key {self._settings.key}"

    def read(self) -> Snapshot:
        body = self._call("/v3/kv/range", {"key": self._key})
        revision = int(body["header"].get("revision", 0))
        kvs = body.get("kvs") or []
        if not kvs:
            return Snapshot(None, None, revision)
        kv = kvs[0]
        return Snapshot(_unb64(kv.get("value", "")), int(kv["mod_revision"]), revision)

    def create(self, value: str) -> int:
        # create_revision == 0 means "absent" in etcd's compare.
        compare = {"target": "CREATE", "result": "EQUAL", "create_revision": 0}
        return self._put_if(compare, value, "already created by another writer meanwhile")

    def replace(self, value: str, version: int) -> int:
        compare = {"target": "MOD", "result": "EQUAL", "mod_revision": version}
        return self._put_if(compare, value, "changed by another writer meanwhile")

    def delete_if(self, value: str) -> bool:
        compare = {"key": self._key, "target": "VALUE", "result": "EQUAL", "value": _b64(value)}
        txn = {"compare": [compare], "success": [{"request_delete_range": {"key": self._key}}]}
        return bool(self._call("/v3/kv/txn", txn).get("succeeded"))

    def wait_for_change(self, after: int, timeout: float) -> bool:
        request = {"create_request": {"key": self._key, "start_revision": after + 1}}
        return self._with_client(lambda client, url: _watch(client, url, request, timeout))

    def _put_if(self, compare: dict[str, Any], value: str, conflict: str) -> int:
        put = {"request_put": {"key": self._key, "value": _b64(value)}}
        body = self._call(
            "/v3/kv/txn", {"compare": [{"key": self._key, **compare}], "success": [put]}
        )
        if not body.get("succeeded"):  # a failed compare omits the field (false is the default)
            raise EtcdConflictError(f"{self.where}: {conflict}")
        return int(body["header"]["revision"])

    def _call(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self._with_client(lambda client, url: _post(client, url + path, payload))

    def _with_client(self, action: Callable[[httpx.Client, str], T]) -> T:
        """Run `action` on the first endpoint that answers; one EtcdError when none does."""
        problems: list[str] = []
        for url in self._settings.endpoints:
            base = url.rstrip("/")
            try:
                with httpx.Client(verify=self._tls(), timeout=self._settings.timeout) as client:
                    self._authenticate(client, base)
                    return action(client, base)
            except (httpx.TransportError, _UnreachableError) as exc:
                problems.append(f"{base}: {_explain_transport(exc)}")
            except _RefusedError as exc:
                self._fail(str(exc), exc)
        raise EtcdError(f"{self.where}: {'; '.join(problems)}")

    def _authenticate(self, client: httpx.Client, base: str) -> None:
        settings = self._settings
        if settings.username is None or settings.password is None:
            return
        credentials = {"name": settings.username, "password": settings.password.get_secret_value()}
        token = _post(client, f"{base}/v3/auth/authenticate", credentials).get("token")
        if not isinstance(token, str):
            raise _RefusedError("no token in the authenticate answer")
        client.headers["Authorization"] = token  # the gateway takes the bare token

    def _tls(self) -> ssl.SSLContext | bool:
        settings = self._settings
        if settings.ca_cert is None and settings.client_cert is None:
            return True
        try:
            context = ssl.create_default_context(
                cafile=str(settings.ca_cert) if settings.ca_cert else None
            )
            if settings.client_cert is not None and settings.client_key is not None:
                context.load_cert_chain(str(settings.client_cert), str(settings.client_key))
        except (OSError, ssl.SSLError) as exc:
            self._fail(f"cannot load the TLS files: {exc}", exc)
        return context

    def _fail(self, problem: str, exc: BaseException | None) -> NoReturn:
        raise EtcdError(f"{self.where}: {problem}") from exc


class _UnreachableError(Exception):
    """This endpoint is not a usable etcd; try the next one."""


class _RefusedError(Exception):
    """etcd answered and said no (credentials, permissions): the next endpoint would too."""


def _post(client: httpx.Client, url: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = client.post(url, json=payload)
    body = _json(response)
    if response.status_code == 200 and isinstance(body.get("header"), dict):
        return body
    if "code" in body and "message" in body:  # a gRPC status from etcd itself
        raise _RefusedError(f"etcd refused the request: {body['message']}")
    raise _UnreachableError(
        f"not an etcd v3 gateway (POST {httpx.URL(url).path} answered HTTP {response.status_code})"
    )


def _watch(client: httpx.Client, url: str, request: dict[str, Any], timeout: float) -> bool:
    """True at the first event after the start revision; False after `timeout` without one."""
    deadline = time.monotonic() + timeout
    limits = httpx.Timeout(timeout, connect=client.timeout.connect)
    try:
        with client.stream("POST", f"{url}/v3/watch", json=request, timeout=limits) as response:
            if response.status_code != 200:
                raise _UnreachableError(f"watch answered HTTP {response.status_code}")
            for line in response.iter_lines():
                result = json.loads(line).get("result", {}) if line.strip() else {}
                if result.get("events") or result.get("compact_revision"):
                    return True
                if time.monotonic() >= deadline:
                    return False
    except httpx.ReadTimeout:
        return False
    except ValueError as exc:
        raise _UnreachableError("not an etcd v3 gateway (the watch stream is not JSON)") from exc
    return False


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _explain_transport(exc: Exception) -> str:
    if isinstance(exc, httpx.ConnectError):
        text = str(exc)
        return "connection refused" if "refused" in text.lower() else f"cannot connect ({text})"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return str(exc) or type(exc).__name__


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode("ascii")


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode("utf-8", errors="replace")
