"""Settings that are valid but risky: warnings for `serve` to print at start. Pure: no I/O.

A plain `ldap://` or `http://` URL is a valid setting (a lab, a sidecar, a service mesh that
encrypts for us), so it is not refused; but it carries users' passwords, or records the
service trusts as stored, in the clear, and the operator should hear it once. Loopback
addresses are exempt: nothing leaves the machine. A `token_ttl` under a minute works with
the registry, but clients take it as a minute (app.settings.SHORTEST_TOKEN_LIFETIME).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel

from app import CONFIG_ENV
from app.backend_settings import LdapBackend, WebhookBackend
from app.settings import SHORTEST_TOKEN_LIFETIME, Settings
from app.settings_env import ENV_PREFIX

WIDE_IPV4, WIDE_IPV6 = 16, 48  # shared_networks wider than these get a warning


def config_warnings(settings: Settings, environ: Mapping[str, str] | None = None) -> list[str]:
    """One line per risky setting, and per REGISTRY_AUTH_* variable of `environ` that names no
    setting (a typo in the file is refused; in a variable it would pass unseen)."""
    found = cleartext_warnings(settings)
    found += [
        f"{name} names no setting and is ignored (the README's configuration reference lists "
        "the variables)"
        for name in unknown_variables(settings, environ or {})
    ]
    for network in settings.brute_force.shared_networks:
        # An IPv6 client counts by its /64: a /48 is 65,536 of them, as an IPv4 /16 is hosts.
        if network.prefixlen < (WIDE_IPV4 if network.version == 4 else WIDE_IPV6):
            found.append(
                f"brute_force.shared_networks: {network} is wide: failures from any of its "
                "addresses count per account only, so one host there may guess at every "
                "account up to its own limit; list the NAT gateways' addresses instead"
            )
    if settings.token_ttl < SHORTEST_TOKEN_LIFETIME:
        found.append(
            f"token_ttl: {settings.token_ttl} s is under a minute: clients (docker, containerd) "
            "take a shorter expires_in as 60 s and send the token after it has expired, which "
            "the registry refuses; the spec asks for at least 60"
        )
    if settings.htpasswd is None and not settings.auth_backends:
        found.append(
            "no authentication: `htpasswd` is unset and `auth_backends` lists no backend, so "
            "every login fails and only anonymous requests get tokens"
        )
    return found


def cleartext_warnings(settings: Settings) -> list[str]:
    """One line per setting that sends secrets unencrypted to another machine."""
    found: list[str] = []
    if _leaves_machine(settings.realm, "http"):
        found.append(
            f"realm: {settings.realm} is plain HTTP: clients send their passwords there "
            "unencrypted; give it an https:// URL (TLS here, or in a proxy in front)"
        )
    for index, backend in enumerate(settings.auth_backends or []):
        where = f"auth_backends[{index}] ({backend.label})"
        if isinstance(backend, LdapBackend) and _leaves_machine(backend.url, "ldap"):
            if not backend.start_tls:
                found.append(
                    f"{where}: {backend.url} without start_tls sends users' passwords and the "
                    "bind password unencrypted; use ldaps:// or `start_tls: true`"
                )
        elif isinstance(backend, WebhookBackend) and _leaves_machine(backend.url, "http"):
            found.append(
                f"{where}: {backend.url} sends users' passwords and the shared secret "
                "unencrypted; use https://"
            )
    hook = settings.authz_webhook
    if hook is not None and _leaves_machine(hook.url, "http"):
        found.append(
            f"authz_webhook: {hook.url} is plain HTTP: the shared secret and who asks for what "
            "cross the network unencrypted, and anyone on the way can answer in its place (up "
            "to what the ACL grants); use https://"
        )
    state = settings.state
    if state.backend == "etcd":
        for endpoint in state.etcd_endpoints:
            if _leaves_machine(endpoint, "http"):
                found.append(
                    f"state.etcd_endpoints: {endpoint} is plain HTTP: refresh-token records and "
                    "login counters (trusted as stored) and any etcd password cross the network "
                    "unencrypted and unauthenticated; use https://"
                )
    publish = settings.etcd
    if publish is not None and publish.password is not None:
        for endpoint in publish.endpoints:
            if _leaves_machine(endpoint, "http"):
                found.append(f"etcd.endpoints: {endpoint} sends the etcd password unencrypted")
    return found


def _leaves_machine(url: str, cleartext_scheme: str) -> bool:
    """`url` uses the unencrypted scheme and names a host other than this machine."""
    parts = urlsplit(url)
    if parts.scheme != cleartext_scheme:
        return False
    host = (parts.hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True  # a name: another machine, as far as we can tell without resolving it
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_loopback


# Variables of this prefix that are not settings, often set on the same machine or in one
# shared environment file: the config file's; containers/image's auth file (skopeo, podman);
# the distribution registry's own `auth:` section (deploy/registry-start.sh exports them).
_REGISTRY_TOKEN_KEYS = (
    "REALM", "SERVICE", "ISSUER", "ROOTCERTBUNDLE", "JWKS", "AUTOREDIRECT", "AUTOREDIRECTPATH",
    "SIGNINGALGORITHMS",
)  # fmt: skip
_NOT_SETTINGS = frozenset(
    {CONFIG_ENV, "REGISTRY_AUTH_FILE"} | {f"REGISTRY_AUTH_TOKEN_{k}" for k in _REGISTRY_TOKEN_KEYS}
)
_NOT_SETTINGS_PREFIXES = ("REGISTRY_AUTH_HTPASSWD_", "REGISTRY_AUTH_SILLY_")
# What kubelet puts in every container of a namespace with a Service named `registry-auth`
# (unless the pod sets `enableServiceLinks: false`): no setting, and nobody's typo.
_SERVICE_LINKS = re.compile(
    r"REGISTRY_AUTH_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?"
    r"|PORT(_[0-9]+_(TCP|UDP|SCTP)(_(ADDR|PORT|PROTO))?)?)"
)


def unknown_variables(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """REGISTRY_AUTH_* variables that name neither a setting (`TOKEN_TTL`, `STATE__PATH`) nor
    a secret the config names (a backend's `*_env`, which may share the prefix)."""
    named = {value.upper() for value in _secret_variables(settings)}
    unknown = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in _NOT_SETTINGS or upper in named:
            continue
        if upper.startswith(_NOT_SETTINGS_PREFIXES) or _SERVICE_LINKS.fullmatch(upper):
            continue
        if not _names_a_setting(upper.removeprefix(ENV_PREFIX).lower().split("__")):
            unknown.append(name)
    return unknown


def _names_a_setting(path: list[str]) -> bool:
    model: type[BaseModel] | None = Settings
    for part in path:
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = next(
            (t for t in (annotation, *getattr(annotation, "__args__", ()))
             if isinstance(t, type) and issubclass(t, BaseModel)),
            None,
        )  # fmt: skip
    return True


def _secret_variables(model: object) -> list[str]:
    """The values of every `*_env` setting, sections and backends included."""
    found: list[str] = []
    if isinstance(model, list):
        for item in model:
            found += _secret_variables(item)
    elif isinstance(model, BaseModel):
        for name in type(model).model_fields:
            value = getattr(model, name)
            if name.endswith("_env") and isinstance(value, str):
                found.append(value)
            else:
                found += _secret_variables(value)
    return found
