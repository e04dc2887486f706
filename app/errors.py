"""One error tree. Each error that reaches a client knows its HTTP status, code and headers."""

from __future__ import annotations


class RegistryAuthError(Exception):
    """Base of every error raised by this package."""


class ConfigError(RegistryAuthError):
    """The configuration cannot be used; the message names the key and the problem."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"config: {key}: {problem}")
        self.key = key
        self.problem = problem


class SettingKeyError(ValueError):
    """Raised inside a settings check that spans sections, naming the key at fault: pydantic
    places such an error at the top level, where "(top level)" would name nothing."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key


class KeyStoreError(RegistryAuthError):
    """The key directory cannot be used (no key, unreadable, unsafe permissions)."""


class UserStoreError(RegistryAuthError):
    """A user file (htpasswd) cannot be read or written; the message names file and line."""


class StateStoreError(RegistryAuthError):
    """The refresh-token store cannot be used (file unwritable, etcd unreachable)."""


class EtcdError(RegistryAuthError):
    """etcd cannot be used right now (unreachable, refused credentials, not etcd at all)."""


class EtcdConflictError(EtcdError):
    """The key changed between our read and our compare-and-swap: someone else wrote it."""


class ClientError(RegistryAuthError):
    """A request that cannot be served because of what the client sent."""

    status: int = 400
    code: str = "invalid_request"
    # The RFC 6749 §5.2 code this error takes in an answer to the OAuth2 POST flow.
    oauth_code: str = "invalid_request"

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.parameter = parameter

    def headers(self) -> dict[str, str]:
        return {}

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {"details": self.message, "error": self.code}
        if self.parameter is not None:
            body["parameter"] = self.parameter
        return body

    def oauth_body(self) -> dict[str, object]:
        """The OAuth2 error (RFC 6749 §5.2); `details` too, which docker shows to its user."""
        return {
            "error": self.oauth_code,
            "error_description": self.message,
            "details": self.message,
        }


class InvalidRequestError(ClientError):
    """A malformed or missing parameter (protocol.md §5: 400 naming the field)."""


class InvalidScopeError(InvalidRequestError):
    code = "invalid_scope"

    def __init__(self, message: str) -> None:
        super().__init__(message, parameter="scope")


class UnknownServiceError(InvalidRequestError):
    code = "invalid_service"

    def __init__(self, service: str, expected: str, *, others: bool = False) -> None:
        # Only `service`, which every registry's challenge shows anyway: not `extra_services`,
        # which an anonymous client has no business listing; but not a sentence that reads as
        # if there were no others either.
        which = f"its main one is {expected!r}" if others else f"it issues them for {expected!r}"
        super().__init__(
            f"unknown service {service!r}: not a service this server issues tokens for ({which})",
            parameter="service",
        )


class AuthenticationError(ClientError):
    """Credentials were given and are wrong (protocol.md §5: 401 + Basic challenge)."""

    status = 401
    code = "unauthorized"
    oauth_code = "invalid_grant"

    def __init__(
        self,
        realm: str,
        message: str = "authentication failed: wrong user name or password",
        *,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.realm = realm
        # For the operator (the audit log, the service log): the client hears the same
        # message either way.
        self.reason = reason

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": f'Basic realm="{self.realm}"'}


class RotationRefusedError(KeyStoreError):
    """A key rotation step that would make a registry reject tokens; the message says why and
    what to do instead."""


class SigningUnavailableError(ClientError):
    """No token can be signed right now (not the client's fault): 503, so clients retry later.

    A ClientError only so that it travels the same JSON error path the clients understand.
    """

    status = 503
    code = oauth_code = "signing_unavailable"
    retry_after = 60  # only an administrator mends it: a client need not ask every second

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class PolicyError(RegistryAuthError):
    """An ACL policy cannot be used; each problem names the file, the rule index and the reason."""

    def __init__(self, problems: list[str]) -> None:
        more = (
            f" (and {len(problems) - 1} more problem(s): `registry-auth acl check` lists them)"
            if len(problems) > 1
            else ""
        )
        super().__init__(f"{problems[0]}{more}")
        self.problems = problems


class BackendUnavailableError(RegistryAuthError):
    """An authentication backend cannot decide right now (down, timing out, circuit open).

    Not the client's fault, so not a ClientError, but it reaches the client all the same: 503
    with a JSON body naming the backend (never its address or the cause, which go to the log),
    so a registry client sees an outage instead of "wrong password" or a 500.
    """

    status = 503
    code = "backend_unavailable"

    def __init__(self, backend: str, cause: str = "unavailable", retry_after: int = 5) -> None:
        super().__init__(f"authentication backend {backend!r} is unavailable: {cause}")
        self.backend = backend
        self.cause = cause
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}

    def body(self) -> dict[str, object]:
        return {
            "details": f"authentication backend {self.backend!r} is unavailable; try again later",
            "error": self.code,
        }


class AuthorizationUnavailableError(BackendUnavailableError):
    """The authorization webhook gave no answer: 503, as for an authentication backend (a
    token without its verdict could grant what it would refuse)."""

    def __init__(self, hook: str, cause: str = "unavailable", retry_after: int = 5) -> None:
        super().__init__(hook, cause, retry_after)
        self.args = (f"authorization webhook {hook!r} is unavailable: {cause}",)

    def body(self) -> dict[str, object]:
        return {
            "details": f"authorization webhook {self.backend!r} is unavailable; try again later",
            "error": self.code,
        }


class UnsupportedGrantTypeError(InvalidRequestError):
    """A POST with a grant_type other than password or refresh_token (RFC 6749 §5.2)."""

    code = oauth_code = "unsupported_grant_type"

    # Named back only when it is one of these: a client that put its password in the wrong
    # field would otherwise have it written to the audit log.
    KNOWN = frozenset(
        {
            "authorization_code",
            "client_credentials",
            "implicit",
            "urn:ietf:params:oauth:grant-type:device_code",
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        }
    )

    def __init__(self, grant_type: str) -> None:
        named = f" {grant_type!r}" if grant_type in self.KNOWN else ""
        super().__init__(
            f"unsupported grant_type{named}: use password or refresh_token",
            parameter="grant_type",
        )


class InvalidGrantError(ClientError):
    """A refresh token that is unknown, expired, revoked or bound to something else (401).

    The client learns only that the token no longer works; the log says why.
    """

    status = 401
    code = oauth_code = "invalid_grant"

    def __init__(self, reason: str, account: str | None = None) -> None:
        super().__init__("refresh token is invalid, expired or revoked: log in again")
        self.reason = reason
        # The account of the token's record, when one was found: for the audit log and the
        # server's log (a dead record is deleted as it is refused, so nothing else names it).
        self.account = account


class TooManyAttemptsError(ClientError):
    """Too many failed logins for this account from this address, or from this address (429).

    Retry-After says when the block lifts; the password was not checked.
    """

    status = 429
    code = "too_many_attempts"
    oauth_code = "slow_down"

    def __init__(self, retry_after: int, whole_address: bool = False) -> None:
        who = "from this address" if whole_address else "for this account from this address"
        super().__init__(f"too many failed logins {who}; try again in {retry_after} s")
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
