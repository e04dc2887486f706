"""The v2 API through python-etcd: what LAIN's registry reads (protocol.md §7).

A python-etcd client is built for every operation: it is cheap, and a long-lived one would
refuse to talk to an etcd that came back with a fresh data dir (a new cluster id).
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn
from urllib.parse import urlsplit

import etcd
import urllib3

from app.errors import EtcdConflictError, EtcdError
from app.etcd.handshake import NO_ANSWER, refused_certificate, unreadable_tls_file
from app.etcd.record import Snapshot
from app.settings_sections import EtcdSettings

DEFAULT_PORT = 2379  # python-etcd's own default is 4001, which etcd 3 no longer listens on
KEY_NOT_FOUND = 100  # etcd v2 errorCode; a bare HTTP 404 also becomes EtcdKeyNotFound


class PythonEtcdBackend:
    """One key through the v2 API."""

    def __init__(self, settings: EtcdSettings) -> None:
        self._settings = settings
        self._key = settings.key
        # python-etcd logs every failure itself (some with tracebacks) and urllib3 logs each of
        # its retries; we convert each failure into one EtcdError, logged once by the publisher.
        logging.getLogger("etcd").setLevel(logging.CRITICAL)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)

    @property
    def where(self) -> str:
        return f"etcd v2 at {', '.join(self._settings.endpoints)} key {self._key}"

    def read(self) -> Snapshot:
        try:
            result = self._client().read(self._key)
        except etcd.EtcdKeyNotFound as exc:
            payload = _payload(exc)
            if payload.get("errorCode") != KEY_NOT_FOUND:
                self._fail(exc)
            return Snapshot(None, None, int(payload.get("index", 0)))
        except Exception as exc:  # noqa: BLE001 - python-etcd raises more than EtcdException
            self._fail(exc)
        if result.dir:
            raise EtcdError(f"{self.where}: is a directory, not a value")
        return Snapshot(result.value, result.modifiedIndex, result.etcd_index)

    def create(self, value: str) -> int:
        return self._write(value, prevExist=False)

    def replace(self, value: str, version: int) -> int:
        return self._write(value, prevIndex=version)

    def delete_if(self, value: str) -> bool:
        try:
            self._client().delete(self._key, prevValue=value)
        except (etcd.EtcdCompareFailed, etcd.EtcdKeyNotFound):
            return False
        except Exception as exc:  # noqa: BLE001 - converted once, here
            self._fail(exc)
        return True

    def wait_for_change(self, after: int, timeout: float) -> bool:
        try:
            self._client().watch(self._key, index=after + 1, timeout=timeout)
        except etcd.EtcdWatchTimedOut:
            return False
        except etcd.EtcdEventIndexCleared:
            return True  # history compacted past `after`: we cannot tell, so look again
        except Exception as exc:  # noqa: BLE001 - converted once, here
            self._fail(exc)
        return True

    def close(self) -> None:
        """Nothing kept: a client is built per operation."""

    def _write(self, value: str, **condition: Any) -> int:
        try:
            result = self._client().write(self._key, value, **condition)
        except (etcd.EtcdCompareFailed, etcd.EtcdAlreadyExist) as exc:
            raise EtcdConflictError(f"{self.where}: changed by another writer meanwhile") from exc
        except etcd.EtcdKeyNotFound as exc:
            if _payload(exc).get("errorCode") == KEY_NOT_FOUND:
                raise EtcdConflictError(f"{self.where}: deleted meanwhile") from exc
            self._fail(exc)
        except Exception as exc:  # noqa: BLE001 - converted once, here
            self._fail(exc)
        return int(result.modifiedIndex)

    def _client(self) -> etcd.Client:
        settings = self._settings
        hosts = [_host_port(endpoint) for endpoint in settings.endpoints]
        options: dict[str, Any] = {
            "protocol": urlsplit(settings.endpoints[0]).scheme,
            "read_timeout": settings.timeout,
            "allow_redirect": False,  # a redirect would send our credentials elsewhere
        }
        if len(hosts) == 1:
            options.update(host=hosts[0][0], port=hosts[0][1])
        else:
            # use_proxies: the endpoints as given, no probe of the cluster's member list (made
            # before the retries below are set, it cost 4 x `timeout` per hung endpoint).
            options.update(host=tuple(hosts), allow_reconnect=True, use_proxies=True)
        if settings.username is not None and settings.password is not None:
            options.update(
                username=settings.username, password=settings.password.get_secret_value()
            )
        unreadable = unreadable_tls_file(settings)
        if unreadable is not None:
            raise EtcdError(f"{self.where}: cannot load the TLS files: {unreadable}")
        if settings.ca_cert is not None:
            options["ca_cert"] = str(settings.ca_cert)
        if settings.client_cert is not None and settings.client_key is not None:
            options["cert"] = (str(settings.client_cert), str(settings.client_key))
        try:
            client = etcd.Client(**options)
        except Exception as exc:  # noqa: BLE001 - several endpoints: the client probes at once
            self._fail(exc)
        # urllib3 would try each request 4 times (its default Retry(3)), so a hung etcd took
        # 4 x `timeout`; python-etcd moves on to the next endpoint itself.
        client.http.connection_pool_kw["retries"] = urllib3.Retry(total=0, redirect=False)
        client.http.clear()
        return client

    def _fail(self, exc: BaseException) -> NoReturn:
        if isinstance(exc, EtcdError):  # already ours (the TLS files): said once, not twice
            raise exc
        raise EtcdError(f"{self.where}: {explain(exc)}") from exc


def _host_port(endpoint: str) -> tuple[str, int]:
    parts = urlsplit(endpoint)
    return parts.hostname or "127.0.0.1", parts.port or DEFAULT_PORT


def _payload(exc: BaseException) -> dict[str, Any]:
    payload = getattr(exc, "payload", None)
    return payload if isinstance(payload, dict) else {}


def explain(exc: BaseException) -> str:
    """One line an operator can act on, from whatever python-etcd raised."""
    if isinstance(exc, etcd.EtcdInsufficientPermissions):
        return "etcd refused the request: wrong username/password, or no permission on the key"
    if isinstance(exc, etcd.EtcdConnectionFailed):
        return _connection_failed(exc)
    if isinstance(exc, etcd.EtcdKeyNotFound):
        # A plain HTTP 404 without etcd's error body: something else listens there, or an
        # etcd 3.4/3.5 started without --enable-v2=true.
        return "not an etcd v2 API (HTTP 404; is it etcd, started with --enable-v2=true?)"
    if isinstance(exc, etcd.EtcdException) and "Bad response" in str(exc):
        return (
            "not an etcd v2 API: the answer is not etcd's JSON "
            "(is it etcd, and started with --enable-v2=true?)"
        )
    if isinstance(exc, etcd.EtcdException) and "decode server response" in str(exc):
        return "not an etcd v2 API (the answer is not JSON)"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text[:200]}"


def _connection_failed(exc: BaseException) -> str:
    if isinstance(_innermost(exc), urllib3.exceptions.ReadTimeoutError):
        return NO_ANSWER
    cause = _root_cause(exc)
    return refused_certificate(cause) or f"cannot connect ({cause})"


def _innermost(exc: BaseException) -> object:
    # EtcdConnectionFailed.cause is urllib3's MaxRetryError, whose .reason is the socket error.
    cause: object = getattr(exc, "cause", None) or exc.__cause__
    while getattr(cause, "reason", None) is not None:
        cause = getattr(cause, "reason", None)
    return cause


def _root_cause(exc: BaseException) -> str:
    text = str(_innermost(exc) or exc)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    return text.splitlines()[0][:200]
