"""Configuration of the authentication backends: the `auth_backends:` list, one model per type.

Pure data, validated at load; nothing here opens a file or a socket. Secrets (the LDAP service
password, the webhook's shared secret) are named by a file or an environment variable, never
written in the config: a clear-text key is refused with a message saying what to use instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from app.setting_types import FilePath, OptionalFilePath, check_url_port

# `uid={account}` in a filter or a DN template: the attribute the account is matched against.
_ACCOUNT_ATTRIBUTE = re.compile(r"([A-Za-z][A-Za-z0-9-]*)=\{account\}")
ROBOT_PREFIX = "robot$"  # robot account names start with it; no other backend sees such names


class _Backend(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(
        default=None, description="name in logs and 503 bodies (absent: the type)"
    )
    accounts: str | None = Field(
        default=None, description="regex (full match) of the accounts this backend answers for"
    )

    @field_validator("accounts")
    @classmethod
    def _accounts_is_regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @property
    def label(self) -> str:
        return self.name or str(getattr(self, "type", "backend"))


class _Cached(BaseModel):
    cache_ttl: float = Field(
        default=0, ge=0, le=600, description="seconds an accepted result is reused; 0 = off"
    )
    cache_size: int = Field(
        default=10_000, gt=0, le=1_000_000, description="most results remembered per worker"
    )


def _refuse_clear_text(data: Any, keys: dict[str, str]) -> Any:
    if isinstance(data, dict):
        for key, instead in keys.items():
            if key in data:
                raise ValueError(
                    f"`{key}` in clear text is refused: use `{instead}_file` or `{instead}_env`"
                )
    return data


def _one_secret_source(file: Path | None, env: str | None, key: str) -> None:
    if file is not None and env is not None:
        raise ValueError(f"set `{key}_file` or `{key}_env`, not both")


class HtpasswdBackend(_Backend):
    """Users in an htpasswd file (bcrypt); no groups."""

    type: Literal["htpasswd"]
    path: FilePath = Field(description="the htpasswd file (bcrypt only), reloaded on change")


class StaticBackend(_Backend):
    """Users in a YAML file: bcrypt hashes and groups."""

    type: Literal["static"]
    path: FilePath = Field(description="the YAML file of users, reloaded on change")


class RobotsBackend(_Backend):
    """Robot accounts managed by `registry-auth robots`; the file holds only hashes."""

    type: Literal["robots"]
    path: FilePath = Field(
        default=Path("robots.yaml"), description="the robot file that `robots create` writes"
    )


class LdapBackend(_Backend, _Cached):
    """An LDAP directory: search-then-bind with a service account, or a direct bind."""

    type: Literal["ldap"]
    url: str = Field(description="ldap://host[:port] or ldaps://host[:port]")
    start_tls: bool = Field(default=False, description="StartTLS on an ldap:// URL")
    ca_file: OptionalFilePath = Field(default=None, description="CA bundle; system CAs otherwise")
    timeout: float = Field(
        default=5,
        gt=0,
        le=60,
        description="seconds to connect and per read; a whole check within twice that",
    )
    pool_size: int = Field(default=4, ge=1, le=64, description="open connections at most")
    mode: Literal["search", "direct"] = Field(
        default="search",
        description="`search`: find the user with the service account, then bind as it; "
        "`direct`: bind as `user_dn_template`",
    )
    bind_dn: str | None = Field(default=None, description="service account (search mode)")
    bind_password_file: OptionalFilePath = Field(
        default=None, description="file holding the service account's password"
    )
    bind_password_env: str | None = Field(
        default=None, description="environment variable holding it (instead of the file)"
    )
    user_base: str | None = Field(default=None, description="search base of users (search mode)")
    user_filter: str = Field(
        default="(uid={account})", description="filter finding the user; {account} is escaped"
    )
    user_dn_template: str | None = Field(
        default=None, description="direct mode, e.g. uid={account},ou=people,dc=example,dc=org"
    )
    account_attribute: str | None = Field(
        default=None,
        description="attribute holding the account name, which the token carries as the "
        "directory spells it (`CAROL` logs in as `carol`); absent: the one `{account}` is "
        "compared with in `user_filter` or `user_dn_template` (e.g. `uid`)",
    )
    groups_from: Literal["memberof", "search", "none"] = Field(
        default="memberof",
        description="`memberof`: the user's `group_attribute`; `search`: `group_filter` under "
        "`group_base`; `none`",
    )
    group_attribute: str = Field(
        default="memberOf",
        description="attribute of the user listing group DNs (`groups_from: memberof`); each "
        "group is the first RDN value",
    )
    group_base: str | None = Field(
        default=None, description="search base of groups (`groups_from: search`)"
    )
    group_filter: str = Field(
        default="(member={dn})", description="filter finding groups; {dn} and {account} escaped"
    )
    group_name_attribute: str = Field(
        default="cn", description="attribute of a found group that is its name"
    )

    @model_validator(mode="before")
    @classmethod
    def _no_clear_text(cls, data: Any) -> Any:
        return _refuse_clear_text(data, {"bind_password": "bind_password"})

    @field_validator("url")
    @classmethod
    def _ldap_url(cls, value: str) -> str:
        parts = urlsplit(value)
        bad_path = parts.path not in ("", "/")
        if parts.scheme not in ("ldap", "ldaps") or not parts.hostname or bad_path:
            raise ValueError("must be ldap://host[:port] or ldaps://host[:port]")
        check_url_port(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> LdapBackend:
        _one_secret_source(self.bind_password_file, self.bind_password_env, "bind_password")
        has_secret = self.bind_password_file is not None or self.bind_password_env is not None
        if self.bind_dn is not None and not has_secret:
            raise ValueError("bind_dn needs `bind_password_file` or `bind_password_env`")
        if self.start_tls and self.url.startswith("ldaps:"):
            raise ValueError("start_tls is for ldap:// URLs; ldaps:// is TLS already")
        if self.mode == "search" and self.user_base is None:
            raise ValueError("mode search needs `user_base`")
        if self.mode == "search" and "{account}" not in self.user_filter:
            raise ValueError("`user_filter` must contain {account}")
        if self.mode == "direct" and "{account}" not in (self.user_dn_template or ""):
            raise ValueError("mode direct needs `user_dn_template` containing {account}")
        if self.groups_from == "search" and self.group_base is None:
            raise ValueError("groups_from search needs `group_base`")
        if self.name_attribute() is None:
            raise ValueError(
                "set `account_attribute`: no `attribute={account}` in the "
                f"{'user_dn_template' if self.mode == 'direct' else 'user_filter'}"
            )
        self._check_ldap_syntax()
        return self

    def _check_ldap_syntax(self) -> None:
        """Filters and DNs as ldap3 would take them, the placeholders filled: else the server
        started, said it was ready, and answered every login 503 (`invalid filter`)."""
        # Here, not at the top: only a config with an LDAP backend pays for importing ldap3.
        from ldap3.core.exceptions import LDAPException  # noqa: PLC0415
        from ldap3.operation.search import parse_filter  # noqa: PLC0415
        from ldap3.utils.dn import parse_dn  # noqa: PLC0415

        def filled(template: str) -> str:
            return template.replace("{account}", "x").replace("{dn}", "cn=x,dc=example")

        filters = {"user_filter": self.user_filter} if self.mode == "search" else {}
        if self.groups_from == "search":
            filters["group_filter"] = self.group_filter
        for key, text in filters.items():
            try:
                parse_filter(  # type: ignore[no-untyped-call]
                    filled(text),
                    schema=None,
                    auto_escape=False,
                    auto_encode=False,
                    validator=None,
                    check_names=False,
                )
            except LDAPException:
                raise ValueError(
                    f"`{key}` is not an LDAP filter: {text!r} (one in parentheses, such as "
                    "`(uid={account})` or `(&(objectClass=person)(uid={account}))`)"
                ) from None
        # Not `bind_dn`: a simple bind sends it as written, and Active Directory takes
        # `svc@corp.example.com` or `CORP\svc` there, which are no DNs.
        names = {
            "user_base": self.user_base,
            "group_base": self.group_base,
            "user_dn_template": self.user_dn_template,
        }
        for key, dn in names.items():
            if not dn:  # absent, or the root (an empty base)
                continue
            try:
                parse_dn(filled(dn))
            except LDAPException as exc:
                raise ValueError(
                    f"`{key}` is not an LDAP DN: {dn!r} ({exc}; such as "
                    "`ou=people,dc=example,dc=org`)"
                ) from None

    def name_attribute(self) -> str | None:
        """`account_attribute`, else the attribute `{account}` is matched against."""
        if self.account_attribute is not None:
            return self.account_attribute
        template = self.user_dn_template if self.mode == "direct" else self.user_filter
        found = _ACCOUNT_ATTRIBUTE.search(template or "")
        return found.group(1) if found else None


class HttpHook(BaseModel):
    """A service asked over HTTP(S) with a JSON POST: the webhook backend, the authorization
    webhook. A shared secret header, optional mTLS, retries and a circuit breaker."""

    url: str = Field(description="http:// or https:// URL the check is POSTed to")
    timeout: float = Field(
        default=5,
        gt=0,
        le=60,
        description="seconds per connection and read; a whole try within twice that",
    )
    retries: int = Field(default=1, ge=0, le=5, description="extra tries after an outage")
    secret_header: str = Field(
        default="X-Registry-Auth-Secret",
        pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$",  # an HTTP field name (RFC 9110 token)
        description="header carrying the shared secret",
    )
    secret_file: OptionalFilePath = Field(
        default=None, description="file holding the shared secret (absent: none is sent)"
    )
    secret_env: str | None = Field(
        default=None, description="environment variable holding it (instead of the file)"
    )
    ca_file: OptionalFilePath = Field(
        default=None, description="CA bundle for an https:// URL; system CAs otherwise"
    )
    client_cert: OptionalFilePath = Field(default=None, description="mTLS certificate (PEM)")
    client_key: OptionalFilePath = Field(default=None, description="mTLS key (PEM)")
    breaker_failures: int = Field(
        default=5, ge=1, le=1000, description="outages in a row that open the circuit"
    )
    breaker_reset: float = Field(
        default=30,
        gt=0,
        le=3600,
        description="seconds the circuit stays open before a trial request",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_clear_text(cls, data: Any) -> Any:
        return _refuse_clear_text(data, {"secret": "secret"})

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL")
        _no_userinfo(value)
        check_url_port(value)
        return value

    @model_validator(mode="after")
    def _consistent_hook(self) -> HttpHook:
        _one_secret_source(self.secret_file, self.secret_env, "secret")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("mTLS needs both `client_cert` and `client_key`")
        return self


class WebhookBackend(_Backend, _Cached, HttpHook):
    """POSTs {account, password, service, client_ip}; 200 accepts, 401/403 reject."""

    type: Literal["webhook"]


class AuthzWebhookSettings(HttpHook):
    """`authz_webhook:` the ACL's grant, narrowed further by an HTTP service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        default="authz", min_length=1, max_length=64, description="name in logs and 503 bodies"
    )
    cache_ttl: float = Field(
        default=0,
        ge=0,
        le=600,
        description="seconds an answer is reused for the same account, groups, service, "
        "client address and scopes; 0 = ask every time",
    )
    cache_size: int = Field(
        default=10_000, gt=0, le=1_000_000, description="most answers remembered per worker"
    )


class JwtBackend(_Backend):
    """Signed tokens from an OpenID Connect issuer as passwords: the ID tokens CI systems give
    their jobs (GitLab CI `id_tokens`, GitHub Actions, Kubernetes service accounts)."""

    type: Literal["jwt"]
    issuer: str = Field(description="the tokens' `iss`, exactly (an https:// URL)")
    audience: str = Field(min_length=1, description="the `aud` a token must carry")
    jwks_url: str | None = Field(
        default=None,
        description="URL of the issuer's keys (absent: `jwks_uri` of the issuer's "
        "/.well-known/openid-configuration)",
    )
    claims: dict[str, str] = Field(
        min_length=1,
        description="claims a token must carry with exactly these values (at least one: an "
        "issuer such as GitHub signs tokens for everyone's jobs)",
    )
    account_claim: str = Field(
        default="sub", min_length=1, description="the claim whose value is the account"
    )
    account_prefix: str = Field(
        default="", description="put before that value (`ci:`), apart from people's names"
    )
    groups_claim: str | None = Field(
        default=None, description="a claim whose value (a string or a list) gives the groups"
    )
    algorithms: list[Literal["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]] = Field(
        default=["RS256", "ES256"], min_length=1, description="signature algorithms accepted"
    )
    leeway: int = Field(default=30, ge=0, le=300, description="seconds of clock skew allowed")
    max_lifetime: int = Field(
        default=86400,
        gt=0,
        description="refuse a token meant to live longer (`exp` - `iat`, seconds)",
    )
    timeout: float = Field(
        default=5,
        gt=0,
        le=60,
        description="seconds per connection and read from the issuer; a whole fetch of its "
        "keys within twice that",
    )
    keys_cache: int = Field(
        default=300,
        ge=10,
        le=86400,
        description="seconds before the issuer's keys are fetched again (in the background: "
        "the keys in hand go on verifying meanwhile)",
    )
    ca_file: OptionalFilePath = Field(
        default=None, description="CA bundle for the issuer's https:// URLs; system CAs otherwise"
    )

    @field_validator("issuer", "jwks_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None:
            check_key_url(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> JwtBackend:
        if self.account_prefix.startswith(ROBOT_PREFIX):
            raise ValueError(f"account_prefix: {ROBOT_PREFIX!r} names are the robot store's")
        return self


def _no_userinfo(url: str, instead: str = "use secret_file") -> None:
    """A password in a URL would be printed wherever the URL is (logs, warnings, errors)."""
    if "@" in urlsplit(url).netloc:
        raise ValueError(f"must not hold a user or password (user@host): {instead}")


def check_key_url(url: str) -> None:
    """https://, or http:// on this machine only: keys fetched in the clear could be swapped
    on the way, and whoever swaps them signs tokens for any account."""
    parts = urlsplit(url)
    _no_userinfo(url, "an issuer's keys are public, fetched without credentials")
    if parts.scheme == "https" and parts.hostname:
        check_url_port(url)
        return
    if parts.scheme == "http" and parts.hostname in ("127.0.0.1", "::1", "localhost"):
        check_url_port(url)
        return
    raise ValueError("must be an https:// URL (http:// only on 127.0.0.1, ::1 or localhost)")


BackendSettings = Annotated[
    HtpasswdBackend | StaticBackend | RobotsBackend | LdapBackend | WebhookBackend | JwtBackend,
    Field(discriminator="type"),
]


def check_backend_list(backends: list[Any]) -> None:
    """Names must be unique (they label logs and 503s); at most one robots store."""
    labels = [backend.label for backend in backends]
    for label in labels:
        if labels.count(label) > 1:
            raise ValueError(f"two backends are called {label!r}: give each a distinct `name`")
    if sum(isinstance(backend, RobotsBackend) for backend in backends) > 1:
        raise ValueError("at most one backend of type robots")


def resolve_backend_paths(backend: BaseModel, base: Path) -> BaseModel:
    """Relative paths in a backend are relative to the config file's directory."""
    updates = {
        name: base / value
        for name, value in backend
        if isinstance(value, Path) and not value.is_absolute()
    }
    return backend.model_copy(update=updates) if updates else backend
