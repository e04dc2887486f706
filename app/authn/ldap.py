"""The LDAP backend (ldap3): search-then-bind or direct bind; groups from memberOf or a search.

ldap3 is synchronous, so each check runs in a worker thread on a pooled connection. Third-party
errors become BackendUnavailableError here, once. An LDAP bind with an empty password is an
"unauthenticated bind" that succeeds (RFC 4513 §5.1.2), so empty passwords are refused first.
Accounts are escaped for filters (RFC 4515) and DNs (RFC 4514): no injection through a name.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import ssl
import threading
import unicodedata
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import anyio.to_thread
from ldap3 import BASE, NONE, SIMPLE, SUBTREE, SYNC, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException, LDAPSASLPrepError
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import escape_rdn, parse_dn
from pydantic import SecretStr

from app.authn.base import AuthResult, Credentials, Outcome
from app.authn.ldap_pool import LdapPool, Pooled
from app.backend_settings import LdapBackend
from app.errors import BackendUnavailableError
from app.http_hook import tls_context

log = logging.getLogger(__name__)

INVALID_CREDENTIALS = 49
UNWILLING_TO_PERFORM = 53  # e.g. a disabled or locked account: a refusal, not an outage
SIZE_LIMIT_EXCEEDED = 4
NO_SUCH_USER = "registry-auth-no-such-user"  # RDN value and password of an unknown name's bind


class _LdapOutage(LDAPException):
    """The directory answered, but not usefully (a failed search, a refused service bind)."""


class _CheckingTls(Tls):
    """TLS that verifies the certificate and host name with the ssl module itself.

    ldap3 2.9 turns the context's host name check off and calls ssl.match_hostname instead,
    which is deprecated (and gone in Python 3.12); here the SSLContext does the whole check.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(validate=ssl.CERT_REQUIRED)
        self._context = context  # made once (ca_file read at start), used for each connection

    def wrap_socket(self, connection: Any, do_handshake: bool = False) -> None:
        connection.socket = self._context.wrap_socket(
            connection.socket,
            server_hostname=connection.server.host,
            do_handshake_on_connect=do_handshake,
        )


class _Deadline:
    """The bound of one whole check. ldap3's `receive_timeout` bounds each read only: a
    directory that keeps sending a byte before it runs out (a failing link, a hostile server)
    held a login, its worker thread and a pooled connection for as long as it liked. When the
    bound passes, the connection in use is shut down under ldap3's feet; its read then fails,
    and so does the check.

    It shuts down a duplicate of the socket's descriptor, made by the check's own thread in
    watch(): the timer's thread never reads a descriptor number that thread may be closing
    (the number could by then be another connection's), and shutting down the TLS socket
    object itself would change its state while its thread is inside it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._lock = threading.Lock()
        self._handle: socket.socket | None = None  # the duplicate: ours to shut down and close
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()

    def watch(self, connection: Connection) -> None:
        """`connection` is the one the check now uses (opened, or taken from the pool); called
        again once it is open, when its socket exists."""
        sock = getattr(connection, "socket", None)
        handle = None
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                handle = socket.socket(fileno=os.dup(sock.fileno()))
        with self._lock:
            previous, self._handle = self._handle, handle
            if self.expired and handle is not None:
                _shut(handle)
        if previous is not None:
            previous.close()

    def release(self) -> bool:
        """The check is done with its connection, before the pool takes it back: it is not
        cut from now on. True when the bound passed first: it may have been cut, so it must
        not be handed out again."""
        with self._lock:
            handle, self._handle = self._handle, None
            expired = self.expired
        if handle is not None:
            handle.close()
        return expired

    def cancel(self) -> None:
        self._timer.cancel()
        self.release()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._handle is not None:
                _shut(self._handle)


def _shut(handle: socket.socket) -> None:
    """A read blocked on the socket (in another thread) returns."""
    with contextlib.suppress(OSError):
        handle.shutdown(socket.SHUT_RDWR)


def build_server(config: LdapBackend, key: str = "auth_backends[]") -> Server:
    """The directory server; a ca_file that cannot be read is a ConfigError naming `key`."""
    parts = urlsplit(config.url)
    secure = parts.scheme == "ldaps"
    tls = _CheckingTls(tls_context(key, config.ca_file))
    return Server(
        parts.hostname or "",
        port=parts.port or (636 if secure else 389),
        use_ssl=secure,
        tls=tls,
        connect_timeout=config.timeout,
        get_info=NONE,
    )


class LdapAuthenticator:
    def __init__(
        self,
        config: LdapBackend,
        bind_password: SecretStr | None = None,
        *,
        key: str = "auth_backends[]",
    ) -> None:
        self._config = config
        self._bind_password = bind_password
        self._server = build_server(config, key)
        self._pool = LdapPool(self._open, config.pool_size, config.timeout)
        self._checks = threading.local()  # .deadline: the bound of the check a thread runs
        self._name_attribute = config.name_attribute() or "uid"  # settings ensure one
        # Whether a backend after this one in the chain answers for a name (build_authentication
        # sets it): then an unknown name is that one's to time (see _as_if_found).
        self.others_after: Callable[[str], bool] = lambda _: False

    async def aclose(self) -> None:
        self._pool.close()

    async def authenticate(self, credentials: Credentials) -> AuthResult:
        password = credentials.password.get_secret_value()
        if not password or not credentials.account.strip():
            return AuthResult(Outcome.REJECTED)
        return await anyio.to_thread.run_sync(self._check, credentials.account, password)

    def _check(self, account: str, password: str) -> AuthResult:
        deadline = self._checks.deadline = _Deadline(2 * self._config.timeout)
        try:
            return self._check_on_pool(deadline, account, password)
        except (LDAPException, OSError) as exc:
            if deadline.expired:
                cause = f"no whole answer within {deadline.seconds:g} s"
                raise BackendUnavailableError(self._config.label, cause) from exc
            raise BackendUnavailableError(self._config.label, _describe(exc)) from exc
        finally:
            deadline.cancel()
            self._checks.deadline = None

    def _check_on_pool(self, deadline: _Deadline, account: str, password: str) -> AuthResult:
        reused = False
        try:
            with self._pool.connection() as pooled:
                reused = pooled.reused
                if reused:  # a new one is watched from its opening on (_open)
                    deadline.watch(pooled.connection)
                return self._decide_within(deadline, pooled, account, password)
        except (LDAPException, OSError):
            if not reused or deadline.expired:
                raise
        # A reused connection may have died with a server restart: drop the idle ones and try
        # once on a fresh connection before calling it an outage.
        self._pool.close()
        with self._pool.connection(fresh=True) as pooled:
            return self._decide_within(deadline, pooled, account, password)

    def _decide_within(
        self, deadline: _Deadline, pooled: Pooled, account: str, password: str
    ) -> AuthResult:
        result = self._decide(pooled, account, password)
        # Past the bound after its last read, the answer stands, but the connection may have
        # been cut meanwhile (ldap3 cannot tell yet): the pool drops it.
        pooled.broken = deadline.release()
        return result

    def _open(self) -> Connection:
        # ldap3 remembers a failed address and refuses it for a while ("invalid server
        # address"), even after the server is back; the pool decides when to try, not ldap3.
        self._server.reset_availability()
        connection = Connection(
            self._server,
            client_strategy=SYNC,
            # ldap3 packs this into SO_RCVTIMEO as an integer: whole seconds, at least one.
            receive_timeout=max(1, math.ceil(self._config.timeout)),
            raise_exceptions=False,
            read_only=True,
        )
        deadline: _Deadline | None = getattr(self._checks, "deadline", None)
        try:
            # Connecting (and an ldaps:// handshake) is bounded by `connect_timeout`; from
            # here on the socket exists, and the check's bound covers StartTLS and the rest
            # (and cuts at once when it passed while connecting).
            connection.open()
            if deadline is not None:  # None: a connection opened outside a check
                deadline.watch(connection)
            started = not self._config.start_tls or connection.start_tls()
        except BaseException:
            _discard(connection)
            raise
        if not started:
            _discard(connection)
            raise _LdapOutage("StartTLS refused")
        return connection

    def _decide(self, pooled: Pooled, account: str, password: str) -> AuthResult:
        if self._config.mode == "direct":
            return self._direct(pooled, account, password)
        return self._search_then_bind(pooled, account, password)

    def _search_then_bind(self, pooled: Pooled, account: str, password: str) -> AuthResult:
        self._bind_service(pooled)
        found = self._find_user(pooled.connection, account)
        if found is None:
            if not self.others_after(account):
                self._as_if_found(pooled, account)
            return AuthResult(Outcome.NOT_MINE)
        dn, attributes = found
        groups = self._groups(pooled.connection, dn, self._spelled(attributes, account), attributes)
        if not _bind(pooled, dn, password):
            return AuthResult(Outcome.REJECTED)
        return self._accepted(dn, account, attributes, groups)

    def _as_if_found(self, pooled: Pooled, account: str) -> None:
        """An unknown account costs the directory work a wrong password costs (the group
        search, a bind, the service account's bind again at the next check), to a DN that
        does not exist: answered after one search, an unknown name took half the time of a
        known one (~1.1 against ~2.3-3.2 ms on loopback slapd), which told anyone timing the
        token endpoint who has an account. Whatever the directory answers that bind, the
        account stays unknown here. The bind carries a placeholder, never a password. Only
        when no backend after this one answers for the name (`others_after`): one that does
        takes its own time (htpasswd's dummy bcrypt check dwarfs this), and its users' logins
        would pay two more round trips, and fill the directory's log with failed binds."""
        dn = f"cn={NO_SUCH_USER},{self._config.user_base or ''}".rstrip(",")
        self._groups(pooled.connection, dn, account, {})
        with contextlib.suppress(_LdapOutage):  # a refusal other than invalidCredentials
            _bind(pooled, dn, NO_SUCH_USER)

    def _direct(self, pooled: Pooled, account: str, password: str) -> AuthResult:
        template = self._config.user_dn_template or ""
        dn = template.replace("{account}", escape_rdn(account))
        if not _bind(pooled, dn, password):
            return AuthResult(Outcome.REJECTED)
        entries = _search(pooled.connection, dn, "(objectClass=*)", self._wanted(), scope=BASE)
        dn, attributes = entries[0] if entries else (dn, {})  # the entry's own DN spelling
        groups = self._groups(pooled.connection, dn, self._spelled(attributes, account), attributes)
        return self._accepted(dn, account, attributes, groups)

    def _spelled(self, attributes: dict[str, Any], typed: str) -> str:
        """The account as the directory spells it, for the group search: a group's memberUid
        is compared case-sensitively (posixGroup), so `DAVE`, who binds as dave, was in none
        of dave's groups, and slipped past a deny written for one."""
        return _directory_spelling(attributes.get(self._name_attribute), typed) or typed

    def _wanted(self) -> list[str]:
        """The user entry's attributes a check reads: the account's name, and memberOf."""
        wanted = [self._name_attribute]
        if self._config.groups_from == "memberof":
            wanted.append(self._config.group_attribute)
        return wanted

    def _accepted(
        self, dn: str, typed: str, attributes: dict[str, Any], groups: frozenset[str]
    ) -> AuthResult:
        """Accepted as the directory spells the account. Directories compare names without
        case and outer spaces, so `CAROL` or ` carol` bind as carol: given to the ACL as typed,
        they slipped past rules written for `carol` (a deny, a group's members)."""
        account = _directory_spelling(attributes.get(self._name_attribute), typed)
        if account is None:
            log.warning(
                "LDAP: no %s in %s (absent, or not readable by the bound account): refusing "
                "the login (see account_attribute)",
                self._name_attribute,
                dn,
            )
            return AuthResult(Outcome.UNNAMED)
        return AuthResult(Outcome.ACCEPTED, account, groups)

    def _bind_service(self, pooled: Pooled) -> None:
        dn = self._config.bind_dn
        if dn is None or pooled.bound_as == dn:
            return
        secret = self._bind_password.get_secret_value() if self._bind_password else ""
        if not _bind(pooled, dn, secret):
            raise _LdapOutage("the service account's bind was refused (check bind_dn/password)")

    def _find_user(self, connection: Connection, account: str) -> tuple[str, dict[str, Any]] | None:
        query = self._config.user_filter.replace("{account}", escape_filter_chars(account))
        base = self._config.user_base or ""
        entries = _search(connection, base, query, self._wanted(), size_limit=2)
        if len(entries) > 1:
            log.warning("LDAP: %d entries match account %r; refusing", len(entries), account)
            return None  # ambiguous: nobody's account
        return entries[0] if entries else None

    def _groups(
        self, connection: Connection, dn: str, account: str, attributes: dict[str, Any]
    ) -> frozenset[str]:
        if self._config.groups_from == "memberof":
            values = attributes.get(self._config.group_attribute, [])
            names = (_first_rdn_value(value) for value in values)
            return frozenset(name for name in names if name)
        if self._config.groups_from == "none":
            return frozenset()
        query = self._config.group_filter.replace("{dn}", escape_filter_chars(dn)).replace(
            "{account}", escape_filter_chars(account)
        )
        name = self._config.group_name_attribute
        entries = _search(connection, self._config.group_base or "", query, [name])
        return frozenset(str(v) for _, attrs in entries for v in attrs.get(name, []))


def _bind(pooled: Pooled, dn: str, password: str) -> bool:
    """True when bound; False for wrong credentials; _LdapOutage for anything else."""
    connection = pooled.connection
    connection.authentication = SIMPLE
    connection.user, connection.password = dn, password
    try:
        ok = connection.bind()
    except LDAPSASLPrepError:
        # ldap3 prepares a password by SASLprep (RFC 4013) and refuses one with a tab or a
        # control character before sending it: no directory password can be that, so it is a
        # wrong password, not an outage (which tore the pool down and skipped the throttle).
        pooled.bound_as = None
        return False
    finally:
        connection.password = None  # do not keep a user's password on a pooled connection
    pooled.bound_as = dn if ok else None
    if ok:
        return True
    code = connection.result.get("result") if connection.result else None
    if code in (INVALID_CREDENTIALS, UNWILLING_TO_PERFORM):
        return False
    raise _LdapOutage(f"bind failed with LDAP result {code}")


def _search(
    connection: Connection,
    base: str,
    query: str,
    attributes: list[str],
    *,
    scope: Any = SUBTREE,
    size_limit: int = 0,
) -> list[tuple[str, dict[str, Any]]]:
    connection.search(base, query, search_scope=scope, attributes=attributes, size_limit=size_limit)
    code = connection.result.get("result") if connection.result else None
    if code not in (0, SIZE_LIMIT_EXCEEDED):
        raise _LdapOutage(f"search failed with LDAP result {code}")
    return [
        (entry["dn"], dict(entry.get("attributes", {})))
        for entry in connection.response or []
        if entry.get("type") == "searchResEntry"
    ]


def _first_rdn_value(dn: str) -> str | None:
    """'cn=ci,ou=groups,dc=example,dc=org' -> 'ci'; 'cn=a\\,b,...' -> 'a,b' (RFC 4514
    escapes undone, as a group search's `cn` has it); None for a value that is not a DN."""
    try:
        value = str(parse_dn(dn)[0][1])
    except (LDAPException, IndexError):
        return None
    try:
        return _DN_ESCAPE.sub(_unescaped, value.encode("utf-8")).decode("utf-8")
    except UnicodeDecodeError:
        return None


# RFC 4514: `\` then two hex digits (one byte of UTF-8), or `\` then the character itself.
_DN_ESCAPE = re.compile(rb"\\([0-9A-Fa-f]{2}|.)", re.DOTALL)


def _unescaped(found: re.Match[bytes]) -> bytes:
    pair = found.group(1)
    return bytes.fromhex(pair.decode("ascii")) if len(pair) == 2 else pair


def directory_name_key(name: str) -> str:
    """A name as a directory compares it (caseIgnoreMatch, RFC 4518): Unicode NFKC, case
    folded, runs of spaces as one and outer spaces dropped. `CAROL` and ` carol` are carol."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


def _directory_spelling(values: Any, typed: str) -> str | None:
    """The entry's own spelling of the account: the value of its name attribute that matches
    what was typed as the directory compares names (a multi-valued uid), else the first one."""
    found = (
        [str(v) for v in values] if isinstance(values, list) else [str(values)] if values else []
    )
    wanted = directory_name_key(typed)
    return next((v for v in found if directory_name_key(v) == wanted), found[0] if found else None)


def _discard(connection: Connection) -> None:
    """Close a connection that failed to open: ldap3 leaves the socket open when TLS fails."""
    with contextlib.suppress(Exception):
        connection.unbind()
    sock = getattr(connection, "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.close()


def _describe(exc: Exception) -> str:
    """A cause for the log and the error: the exception type and ldap3's text (no secrets);
    our own outages speak for themselves."""
    if isinstance(exc, _LdapOutage):
        return str(exc)[:200]
    return f"{type(exc).__name__}: {exc}"[:200]
