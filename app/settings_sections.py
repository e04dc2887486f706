"""The nested sections of the settings (etcd, state store, brute force, limits, TLS): one
pydantic model each, validated as part of `Settings` in app/settings.py."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyNetwork,
    SecretStr,
    field_validator,
    model_validator,
)

from app.setting_types import FilePath, OptionalFilePath, check_url_port

IPV6_COUNTED_PREFIX = 64  # app.state.attempts counts an IPv6 client by its /64
IPV4_MAPPED = IPv6Network("::ffff:0:0/96")
Network = IPv4Network | IPv6Network


class EtcdSettings(BaseModel):
    """Where to publish realm/issuer/service for the registry (LAIN reads them from etcd)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoints: list[str] = Field(
        default=["http://127.0.0.1:2379"], min_length=1, description="etcd client URLs"
    )
    key: str = Field(
        default="/lain/config/auth/registry",
        pattern=r"^(/[^/]+)+$",
        description="the key to own (`/a/b`: no empty part, no trailing `/`)",
    )
    api: Literal["v2", "v3"] = Field(
        default="v2",
        description="etcd API to publish with: `v2` (what LAIN's registry reads) or `v3`",
    )
    username: str | None = Field(
        default=None, min_length=1, description="etcd user (with password)"
    )
    password: SecretStr | None = Field(default=None, description="etcd password (never logged)")
    ca_cert: OptionalFilePath = Field(
        default=None, description="CA bundle to verify etcd's TLS cert (absent: the system CAs)"
    )
    client_cert: OptionalFilePath = Field(default=None, description="TLS client certificate (PEM)")
    client_key: OptionalFilePath = Field(default=None, description="its private key (PEM)")
    timeout: float = Field(default=5.0, gt=0, le=300, description="seconds per etcd request")
    interval: float = Field(default=30.0, gt=0, le=86400, description="seconds between checks")
    retry_initial: float = Field(
        default=1.0, gt=0, le=3600, description="first retry delay, seconds"
    )
    retry_max: float = Field(
        default=30.0, gt=0, le=3600, description="cap of the retry delay, seconds"
    )
    watch: bool = Field(default=True, description="also watch the key, on top of the checks")
    delete_on_shutdown: bool = Field(
        default=False, description="delete the key on clean shutdown (off: the registry needs it)"
    )

    @field_validator("endpoints")
    @classmethod
    def _endpoints_are_urls(cls, value: list[str]) -> list[str]:
        for endpoint in value:
            _check_endpoint(endpoint, "username and password")
        if len({urlsplit(endpoint).scheme for endpoint in value}) > 1:
            raise ValueError("all endpoints must use the same scheme (http or https)")
        return value

    @model_validator(mode="after")
    def _pairs_are_complete(self) -> EtcdSettings:
        _check_pairs(self, "username", "password", "client_cert", "client_key")
        if self.retry_max < self.retry_initial:
            raise ValueError("retry_max must be at least retry_initial")
        return self


class StateSettings(BaseModel):
    """Where refresh tokens and failed-login counters live: a SQLite file (one machine), etcd v3
    (several machines), or nowhere (`none`: refresh tokens off)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["sqlite", "etcd", "none"] = Field(
        default="sqlite",
        description="`sqlite` (one machine, several workers), `etcd` (v3; several machines), "
        "or `none`: no refresh tokens (clients keep their password), login counters in memory",
    )
    path: FilePath = Field(
        default=Path("registry-auth.db"),
        description="the SQLite file of the `sqlite` store (relative: to the config file); "
        "the start is refused when the service cannot write it or its directory, or when it "
        "is a directory or a file other than an SQLite database",
    )
    etcd_endpoints: list[str] = Field(
        default=["http://127.0.0.1:2379"],
        min_length=1,
        description="etcd client URLs of the `etcd` store (v3 API)",
    )
    etcd_prefix: str = Field(
        default="/registry-auth/refresh-tokens/",
        pattern=r"^/.*/$",
        description="etcd key prefix of the refresh-token records",
    )
    etcd_timeout: float = Field(default=5.0, gt=0, le=60, description="seconds per etcd request")
    etcd_username: str | None = Field(
        default=None, min_length=1, description="etcd user of the `etcd` store (with a password)"
    )
    etcd_password: SecretStr | None = Field(
        default=None, description="its etcd password (never logged)"
    )
    etcd_ca_cert: OptionalFilePath = Field(
        default=None,
        description="CA bundle to verify etcd's TLS cert (absent: the system CAs; relative: to "
        "the config)",
    )
    etcd_client_cert: OptionalFilePath = Field(
        default=None, description="TLS client certificate for etcd (PEM)"
    )
    etcd_client_key: OptionalFilePath = Field(default=None, description="its private key (PEM)")

    @field_validator("etcd_endpoints")
    @classmethod
    def _endpoints_are_urls(cls, value: list[str]) -> list[str]:
        for endpoint in value:
            _check_endpoint(endpoint, "etcd_username and etcd_password")
        return value

    @model_validator(mode="after")
    def _pairs_are_complete(self) -> StateSettings:
        _check_pairs(self, "etcd_username", "etcd_password", "etcd_client_cert", "etcd_client_key")
        return self


def _check_pairs(section: BaseModel, *names: str) -> None:
    """Fields that only work together, given as (a, b) pairs: both set or neither."""
    for first, second in zip(names[::2], names[1::2], strict=True):
        if (getattr(section, first) is None) != (getattr(section, second) is None):
            raise ValueError(f"{first} and {second} go together: set both or neither")


class BruteForceSettings(BaseModel):
    """Failed logins counted per (account, client IP) and per client IP; see Hardening."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=True, description="count failed logins and slow them down")
    account_ip_free: int = Field(
        default=5, ge=0, description="failures per (account, IP) answered without delay"
    )
    account_ip_block: int = Field(
        default=10, ge=1, description="failures per (account, IP) after which 429 answers"
    )
    ip_free: int = Field(default=20, ge=0, description="failures per IP answered without delay")
    ip_block: int = Field(default=100, ge=1, description="failures per IP after which 429 answers")
    initial_delay: float = Field(
        default=0.25, ge=0, le=60, description="seconds of the first delay, doubled per failure"
    )
    max_delay: float = Field(default=4.0, ge=0, le=60, description="cap of the delay, seconds")
    window: int = Field(
        default=900,
        gt=0,
        le=86400,
        description="seconds a failure is remembered, counted from the latest one; a block "
        "lasts until then",
    )
    shared_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="CIDRs whose addresses many clients share (a CI farm or an office behind "
        "NAT): failures from there count per (account, IP) only, not per IP, so one job's "
        "stale secret cannot block everyone behind the address",
    )

    @field_validator("shared_networks")
    @classmethod
    def _countable(cls, networks: list[Network]) -> list[Network]:
        for network in networks:
            if isinstance(network, IPv6Network) and network.subnet_of(IPV4_MAPPED):
                raise ValueError(f"{network}: write IPv4-mapped addresses as IPv4")
            if isinstance(network, IPv6Network) and network.prefixlen > IPV6_COUNTED_PREFIX:
                raise ValueError(
                    f"{network}: an IPv6 client is counted by its /64, so a shared network "
                    "is one /64 or more (a narrower one would shelter the whole /64)"
                )
        return networks

    etcd_prefix: str = Field(
        default="/registry-auth/failures/",
        pattern=r"^/.*/$",
        description="etcd key prefix of the counters when `state.backend` is `etcd`",
    )
    etcd_read_cache: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="seconds a worker answers logins from the counters it last read from etcd "
        "(`state.backend: etcd`); its own failures count at once, another machine's within "
        "this time; 0: read etcd on every login",
    )

    @model_validator(mode="after")
    def _ordered(self) -> BruteForceSettings:
        if self.account_ip_block <= self.account_ip_free:
            raise ValueError("account_ip_block must be greater than account_ip_free")
        if self.ip_block <= self.ip_free:
            raise ValueError("ip_block must be greater than ip_free")
        if self.max_delay < self.initial_delay:
            raise ValueError("max_delay must be at least initial_delay")
        return self


class LimitSettings(BaseModel):
    """Bounds on what a client may send, checked before any handler runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_header_bytes: int = Field(
        default=8192, ge=1024, le=65536, description="all request headers together (else 431)"
    )
    max_authorization_length: int = Field(
        default=4096, ge=64, le=65536, description="the Authorization header (else 431)"
    )
    max_query_length: int = Field(
        default=8192, ge=256, le=65536, description="the query string, bytes (else 400)"
    )
    max_body_bytes: int = Field(
        default=16384, ge=1024, le=1048576, description="a POST body, bytes (else 413)"
    )
    header_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="seconds a client has to send a request's headers, then its body (else 408)",
    )


class TlsSettings(BaseModel):
    """HTTPS served by the service itself; both files are reloaded when they change."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cert: FilePath = Field(description="PEM certificate chain (leaf first)")
    key: FilePath = Field(description="PEM private key of the leaf (mode 0600)")


def _check_endpoint(endpoint: str, credentials: str) -> None:
    """An etcd endpoint: scheme://host:port (http or https), nothing more. A URL is printed in
    logs, in `/readyz` (which anyone may ask) and in the CLI's output, so no user or password
    may be in it, and no error here prints it: a password holding `/`, `?` or `#` ends the
    host part early, and the rest would pass for a path or fail as a bad port."""
    if "@" in endpoint:
        raise ValueError(
            f"an endpoint must not hold a user or password (user@host): use {credentials}"
        )
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an endpoint must be an http:// or https:// URL (scheme://host:port)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("an endpoint is scheme://host:port, without a path or query")
    check_url_port(endpoint)
