"""Configuration: a YAML file, overridden key by key by REGISTRY_AUTH_* environment variables.

Built by the caller (`load_settings`), never at import. Relative paths in a config file are
resolved against the file's directory, so a config works from any working directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    Field,
    IPvAnyNetwork,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from app import CONFIG_ENV
from app.backend_settings import (
    AuthzWebhookSettings,
    BackendSettings,
    check_backend_list,
    resolve_backend_paths,
)
from app.errors import ConfigError, SettingKeyError
from app.setting_types import (
    ClientIPHeader,
    FilePath,
    OptionalFilePath,
    boolean_number,
    check_url_port,
)
from app.settings_env import ENV_PREFIX, EnvironmentSource, value_source
from app.settings_sections import (
    BruteForceSettings,
    EtcdSettings,
    LimitSettings,
    StateSettings,
    TlsSettings,
)
from app.yaml_strict import load_strict_yaml, yaml_kind, yaml_problem

# What `registry-auth serve` runs with when no config file is given: loopback only, a development
# key generated into keys/, users from users.htpasswd in the working directory.
EMBEDDED_DEFAULTS: dict[str, Any] = {
    "issuer": "registry-auth",
    "service": "registry.local",
    "realm": "http://127.0.0.1:5001/token",
    "listen": "127.0.0.1:5001",
    "htpasswd": "users.htpasswd",
}


# Clients (distribution's, containerd's) take a shorter `expires_in` as 60 s, and the spec asks
# token servers never to return a token with less to live (token.md).
SHORTEST_TOKEN_LIFETIME = 60


class Settings(BaseSettings):
    """Every setting of the service. See the README's configuration reference."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        # `REGISTRY_AUTH_AUDIT_LOG=null` turns an optional setting off, as `null` does in YAML.
        env_parse_none_str="null",
        extra="forbid",
        frozen=True,
    )

    issuer: str = Field(
        min_length=1,
        description="JWT `iss`; must equal the registry's `auth.token.issuer`",
    )
    service: str = Field(
        min_length=1,
        description="JWT `aud`; must equal the registry's `auth.token.service`; "
        "requests naming another service (not in `extra_services`) get 400",
    )
    extra_services: list[str] = Field(
        default_factory=list,
        description="more registries' `service` names this server also issues tokens for (as "
        "their `aud`), with the same keys, users and ACL (told apart by the ACL's `service`); "
        "`service` stays the default and the one published to etcd",
    )
    realm: str = Field(
        description="URL of the token endpoint as clients reach it (http/https); "
        "the service also answers at its path",
    )
    listen: str = Field(
        default="127.0.0.1:5001",
        description="address and port to listen on (`[::1]:5001` for IPv6); "
        "`serve --host/--port` override it (without a config file, the realm follows them)",
    )
    token_ttl: int = Field(
        default=300,
        gt=0,
        le=86400,
        description="token lifetime in seconds: `exp - iat` and `expires_in`",
    )
    keys_dir: FilePath = Field(
        default=Path("keys"),
        description="directory of the signing keys, `keyring.json` and `bundle.pem`",
    )
    key_propagation: int = Field(
        default=0,
        ge=0,
        le=86400,
        description="seconds a changed key ring may take to reach every instance, which `keys "
        "retire` adds to its wait: 0 when instances read `keys_dir` itself (their "
        "`reload_interval` is within the registry's leeway); 120 in Kubernetes, where kubelet "
        "refreshes a mounted Secret within about a minute and `keys sync` copies it",
    )
    htpasswd: OptionalFilePath = Field(
        default=None,
        description="htpasswd file of bcrypt users, reloaded on change; "
        "without it only anonymous requests succeed",
    )
    x5c: bool = Field(
        default=True,
        description="send the signing certificate in the JWT header "
        "(registry 3.x needs it; 2.x also matches `kid`)",
    )
    reload_interval: float = Field(
        default=2.0,
        gt=0,
        le=3600,
        description=(
            "seconds between checks of watched files (users, robots, keys, ACL, TLS) for "
            "changes; a changed users, robots, key or ACL file is applied once it has not "
            "been written to for a second"
        ),
    )
    acl: OptionalFilePath = Field(
        default=None,
        description="ACL policy file (YAML, see Access control), reloaded on change; "
        "without it the built-in default applies",
    )
    authz_webhook: AuthzWebhookSettings | None = Field(
        default=None,
        description="an HTTP service that narrows what the ACL granted (see Access control); "
        "absent: the ACL alone decides",
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="CIDRs of reverse proxies whose `client_ip_header` gives the client "
        "address (`ip` rules, brute-force counters, audit log); from any other peer it is "
        "ignored",
    )
    client_ip_header: ClientIPHeader = Field(
        default="x-forwarded-for",
        description="the header a trusted proxy names the client in, and the only one read: "
        "`x-forwarded-for` (read from the right, skipping trusted proxies) or `x-real-ip` "
        "(a proxy that sets only X-Real-IP passes on a client's own X-Forwarded-For)",
    )
    certificate_warning_days: int = Field(
        default=30,
        ge=0,
        le=3650,
        description="warn (log and /readyz) when the active certificate expires within these days",
    )
    robot_warning_days: int = Field(
        default=14,
        ge=0,
        le=3650,
        description="warn (log, /readyz, a metric) when a robot account expires within these days",
    )
    refresh_token_lifetime: int = Field(
        default=90 * 86400,
        gt=0,
        # 1000 years: "never" is far inside it; past year 9999 the stores' dates overflowed
        # and every docker login was a 500.
        le=1000 * 365 * 86400,
        description="seconds a refresh token lives from its issue (default 90 days)",
    )
    refresh_token_idle_timeout: int = Field(
        default=30 * 86400,
        gt=0,
        le=1000 * 365 * 86400,
        description="seconds without use after which a refresh token dies (default 30 days)",
    )
    refresh_tokens_per_account: int = Field(
        default=1000,
        ge=1,
        le=1_000_000,
        description="refresh tokens kept per account: a login beyond it drops the one used "
        "longest ago (any user could otherwise fill the store by logging in again and again)",
    )
    refresh_token_same_client: bool = Field(
        default=False,
        description="refuse a refresh grant whose `client_id` is not the one the token was "
        "issued to; off (default): docker's stored identity token is also used by containerd "
        "(`containerd-client`) and containers/image (`containers/image`: skopeo, podman)",
    )
    state: StateSettings = Field(
        default_factory=StateSettings,
        description="where refresh tokens and failed-login counters are kept (shared by "
        "every instance)",
    )
    etcd: EtcdSettings | None = Field(
        default=None, description="publish realm/issuer/service to etcd (absent: standalone)"
    )
    auth_backends: list[BackendSettings] | None = Field(
        default=None,
        description="ordered authentication backends; absent: `htpasswd` alone",
    )
    credential_cache_ttl: float = Field(
        default=60.0,
        ge=0,
        le=3600,
        description="seconds a verified htpasswd/static password is remembered (as an HMAC, never "
        "the password); a changed or removed entry is refused at once; 0: check bcrypt every time",
    )
    credential_cache_size: int = Field(
        default=10_000, gt=0, le=1_000_000, description="most remembered credentials per worker"
    )
    password_check_threads: int | None = Field(
        default=None,
        gt=0,
        le=256,
        description="threads per worker checking bcrypt passwords (absent: one per CPU)",
    )
    token_reuse: bool = Field(
        default=True,
        description="serve the same token again for the same account, service, granted access "
        "and signing key while enough of its lifetime remains (off: sign every token)",
    )
    token_reuse_min_remaining: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="share of the lifetime that must remain for a token to be reused",
    )
    token_reuse_size: int = Field(
        default=10_000, gt=0, le=1_000_000, description="most tokens kept for reuse per worker"
    )
    workers: int = Field(
        default=1,
        ge=0,
        le=512,
        description="server processes: 1 runs uvicorn in this process; 0 (one per CPU: the "
        "cores, or the cgroup CPU limit when lower) or more runs granian with that many "
        "workers; `serve --workers` overrides it",
    )
    shutdown_timeout: int = Field(
        default=30,
        ge=1,
        le=3600,
        description="seconds SIGTERM (or a worker's restart) waits for the requests in flight; "
        "then uvicorn (`workers: 1`) answers those still running with 503 and granian closes "
        "their connections",
    )
    worker_scheduling: Literal["batch", "normal"] = Field(
        default="batch",
        description="Linux CPU scheduling of granian's worker processes: `batch` (SCHED_BATCH: "
        "under full load a waking thread waits for its turn instead of interrupting the one "
        "signing a token; more tokens/s, far fewer context switches) or `normal` (the kernel's "
        "default); not used with `workers: 1`",
    )
    worker_timeout: float = Field(
        default=30,
        ge=0,
        le=3600,
        description="seconds a granian worker's event loop may stop running (a hung disk, a "
        "deadlock, an endless loop) before the main process writes the "
        "worker's Python stacks to the log, kills it and starts another; 0 turns this off; "
        "at least 10 otherwise; not used with `workers: 1`",
    )

    brute_force: BruteForceSettings = Field(
        default_factory=BruteForceSettings,
        description="failed-login counting and throttling (see Hardening)",
    )
    limits: LimitSettings = Field(
        default_factory=LimitSettings, description="request size and time limits"
    )
    tls: TlsSettings | None = Field(
        default=None, description="serve HTTPS with this certificate and key (absent: HTTP)"
    )
    audit_log: str | None = Field(
        default="-",
        description="where the audit log goes: `-` for stdout, a file path, or null for off",
    )
    metrics: bool = Field(default=True, description="serve Prometheus metrics at GET /metrics")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives as init kwargs; environment variables win over it.
        return (EnvironmentSource(settings_cls), init_settings)

    @field_validator("realm")
    @classmethod
    def _realm_is_http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:5001/token")
        check_url_port(value)
        return value

    @field_validator("audit_log")
    @classmethod
    def _audit_log_not_empty(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("is empty: give `-` (stdout), a file path, or null to turn it off")
        return value

    @field_validator("auth_backends")
    @classmethod
    def _backends_distinct(cls, value: list[Any] | None) -> list[Any] | None:
        if value is not None:
            check_backend_list(value)
        return value

    @field_validator("worker_timeout")
    @classmethod
    def _worker_timeout_off_or_long(cls, value: float) -> float:
        # A replacement stuck as soon as it starts would otherwise be killed within granian's
        # 5.5 s crash-loop window, and granian would stop the whole service.
        if 0 < value < 10:
            raise ValueError("must be 0 (off) or at least 10 seconds")
        return value

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        split_listen(value)
        return value

    @field_validator("extra_services")
    @classmethod
    def _services_named(cls, value: list[str]) -> list[str]:
        if any(not name for name in value):
            raise ValueError("a service name cannot be empty")
        if len(set(value)) != len(value):
            raise ValueError("a service is named twice")
        return value

    @model_validator(mode="after")
    def _service_not_repeated(self) -> Settings:
        if self.service in self.extra_services:
            raise SettingKeyError("extra_services", f"{self.service!r} is `service` already")
        return self

    @model_validator(mode="after")
    def _one_way_to_htpasswd(self) -> Settings:
        if self.auth_backends is not None and self.htpasswd is not None:
            raise SettingKeyError(
                "htpasswd", "with auth_backends, list it there as `- type: htpasswd` instead"
            )
        return self

    @model_validator(mode="after")
    def _etcd_prefixes_apart(self) -> Settings:
        # Both live in the state store's etcd; the refresh records' range would take in the
        # counters (or the reverse), and a counter read as a record failed logins with a 500.
        records, counters = self.state.etcd_prefix, self.brute_force.etcd_prefix
        if (
            self.state.backend == "etcd"
            and self.brute_force.enabled
            and (records.startswith(counters) or counters.startswith(records))
        ):
            raise SettingKeyError(
                "state.etcd_prefix",
                f"{records!r} and brute_force.etcd_prefix {counters!r} overlap: the refresh "
                "tokens and the login counters need prefixes apart, e.g. "
                "/registry-auth/refresh-tokens/ and /registry-auth/failures/",
            )
        return self

    @property
    def services(self) -> tuple[str, ...]:
        """Every service this server issues tokens for, `service` first."""
        return (self.service, *self.extra_services)

    @property
    def realm_path(self) -> str:
        """The path part of the realm: the token endpoint also answers there."""
        return urlsplit(self.realm).path or "/"


def split_listen(value: str) -> tuple[str, int]:
    """'127.0.0.1:5001' or '[::1]:5001' -> (host, port); ValueError naming the problem."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("must be host:port, e.g. 127.0.0.1:5001 or [::1]:5001")
    return host.strip("[]"), int(port_text)


def load_settings(
    config_file: Path | None = None,
    *,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Build the settings from a YAML file (or the embedded defaults) plus the environment.

    Raises ConfigError with one line naming the key and the problem.
    """
    option = "--config"  # what gave the file, for an error reading it
    if config_file is None and os.environ.get(CONFIG_ENV):
        config_file, option = Path(os.environ[CONFIG_ENV]), CONFIG_ENV
    if config_file is None:
        data, base = dict(EMBEDDED_DEFAULTS), Path.cwd()
    else:
        data, base = _read_yaml(config_file, option), config_file.parent
    data.update(overrides or {})
    boolean = boolean_number(Settings, data)
    if boolean is not None:
        where = value_source(boolean, config_file, data)
        raise ConfigError(
            ".".join(str(part) for part in boolean), f"must be a number, not true or false{where}"
        )
    try:
        settings = Settings(**data)
    except ValidationError as exc:
        raise _config_error(exc, config_file, data) from None
    return _resolve_paths(settings, base)


def override_setting(settings: Settings, option: str, key: str, value: Any) -> Settings:
    """`settings` with `key` set from a command-line `option`, checked as the setting is in a
    file (limits, validators); a ConfigError names the option."""
    updated = settings.model_copy()
    try:
        # Not model_validate: it would read the environment again, over the command line.
        Settings.__pydantic_validator__.validate_assignment(updated, key, value)
    except ValidationError as exc:
        raise ConfigError(option, f"{exc.errors()[0]['msg']} (overrides `{key}`)") from None
    return updated


def _read_yaml(path: Path, option: str = "--config") -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(option, f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(option, f"{path} is not UTF-8 text") from None
    try:
        data = load_strict_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(option, f"{path} is not valid YAML{yaml_problem(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(option, f"{path} must hold a mapping of settings")
    for key in data:
        if not isinstance(key, str):  # `1:`, `yes:` or `null:` at the top
            raise ConfigError(
                str(key),
                f"unknown setting: YAML reads this name as {yaml_kind(key)}, and a setting's name "
                f"is text (in {path})",
            )
        # The settings model matches top-level names in any case (as it must the REGISTRY_AUTH_*
        # variables): `Token_TTL` was taken, and `TOKEN_TTL` beside `token_ttl` silently lost.
        if key != key.lower():
            raise ConfigError(
                key, f"unknown setting: settings are lower case (`{key.lower()}`) (in {path})"
            )
    return data


def _config_error(
    exc: ValidationError, config_file: Path | None, file_data: dict[str, Any]
) -> ConfigError:
    first = exc.errors()[0]
    keyed = first.get("ctx", {}).get("error")
    if isinstance(keyed, SettingKeyError):  # a check across sections names its key itself
        first = {**first, "loc": tuple(keyed.key.split("."))}
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    message = first["msg"].removeprefix("Value error, ")  # pydantic's label of our own text
    if first["type"] == "missing":
        message = "missing (required)"
    elif first["type"] == "extra_forbidden":
        message = "unknown setting (check the spelling against the README's reference)"
    elif first["type"] == "model_type":  # pydantic names the model class: `TlsSettings`
        # Not the value itself: it may be a secret written one level too high.
        kind = yaml_kind(first["input"])
        message = f"must be a section of settings (`key: value` under it), not {kind}"
    others = list(
        dict.fromkeys(".".join(str(p) for p in e["loc"]) or "(top level)" for e in exc.errors()[1:])
    )
    shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
    suffix = f"; and {len(exc.errors()) - 1} more problem(s): {shown}" if others else ""
    # A missing key is blamed on where its section came from: a variable may have made it.
    loc = first["loc"][:-1] if first["type"] == "missing" else first["loc"]
    where = value_source(loc, config_file, file_data)
    return ConfigError(key, f"{message}{where}{suffix}")


def _resolve_paths(settings: Settings, base: Path) -> Settings:
    updates: dict[str, Any] = {}
    if not settings.keys_dir.is_absolute():
        updates["keys_dir"] = base / settings.keys_dir
    if settings.htpasswd is not None and not settings.htpasswd.is_absolute():
        updates["htpasswd"] = base / settings.htpasswd
    state_files = _relative_files(settings.state, ("path", *STATE_TLS_FILES), base)
    if state_files:
        updates["state"] = settings.state.model_copy(update=state_files)
    etcd_files = _relative_files(settings.etcd, TLS_FILES, base) if settings.etcd else {}
    if settings.etcd is not None and etcd_files:
        updates["etcd"] = settings.etcd.model_copy(update=etcd_files)
    if settings.tls is not None:
        updates["tls"] = settings.tls.model_copy(
            update={"cert": base / settings.tls.cert, "key": base / settings.tls.key}
        )
    if settings.audit_log not in (None, "-") and not Path(str(settings.audit_log)).is_absolute():
        updates["audit_log"] = str(base / str(settings.audit_log))
    if settings.acl is not None and not settings.acl.is_absolute():
        updates["acl"] = base / settings.acl
    if settings.auth_backends is not None:
        updates["auth_backends"] = [resolve_backend_paths(b, base) for b in settings.auth_backends]
    if settings.authz_webhook is not None:
        updates["authz_webhook"] = resolve_backend_paths(settings.authz_webhook, base)
    return settings.model_copy(update=updates) if updates else settings


TLS_FILES = ("ca_cert", "client_cert", "client_key")
STATE_TLS_FILES = tuple(f"etcd_{name}" for name in TLS_FILES)


def _relative_files(section: BaseModel, names: tuple[str, ...], base: Path) -> dict[str, Path]:
    """The section's relative paths among `names`, made relative to the config file's folder."""
    return {
        name: base / path
        for name in names
        if (path := getattr(section, name)) is not None and not path.is_absolute()
    }
