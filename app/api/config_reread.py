"""SIGHUP: the config file read again. With granian's workers it applies when a new worker can
start on it (app.api.supervisor restarts them); one process (`workers: 1`) cannot restart
itself, so it says what a restart would change. Either way a config that does not load, or
changes what only a restart applies (RESTART_ONLY), is refused with one line in the log and
the old one kept.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from pydantic import BaseModel

from app.api.config_refusal import set_config_refused
from app.api.workers import worker_problem
from app.assembly import start_refusal
from app.config_warnings import config_warnings
from app.errors import RegistryAuthError
from app.settings import Settings

log = logging.getLogger(__name__)

Reread = Callable[[], Settings]
# What granian is given once, at the start: a change needs a restart.
RESTART_ONLY = ("listen", "workers", "tls", "shutdown_timeout", "limits.header_timeout")


def next_settings(running: list[Settings], reread: Reread | None) -> bool:
    """Whether to restart the workers, on the config read again (SIGHUP, with `reread`) or
    else on the settings they run on: only when a new worker can start on them. Puts them in
    `running`; says why not in one log line. Never raises: granian's supervising loop runs it,
    and an exception there would stop it from ever replacing a worker again."""
    cause = "SIGHUP ignored" if reread is not None else "workers not restarted"
    try:
        candidate = running[0] if reread is None else reread_config(reread, running[0])
        if candidate is None:
            return _refused(reread)  # said why
        refused = start_refusal(candidate) if reread is not None else None
        problem = worker_problem(candidate) if refused is None else None
    except Exception as exc:  # noqa: BLE001 - see the docstring
        log.error("%s: %s", cause, type(exc).__name__)  # noqa: TRY400
        return _refused(reread)
    if refused is not None:  # what a start would refuse
        log.error("%s: %s", cause, refused)
        return _refused(reread)
    if problem is not None:
        log.error("%s: a new worker could not start (%s)", cause, problem)
        return _refused(reread)
    if reread is not None:
        set_config_refused(False)
    changed = changed_settings(running[0], candidate)
    if changed:
        log.info("SIGHUP: the config changed (%s): the workers restart on it", ", ".join(changed))
        for warning in config_warnings(candidate, os.environ):
            log.warning("%s", warning)
    running[0] = candidate
    return True


def reread_config(reread: Reread, running: Settings) -> Settings | None:
    """The config as it reads now; None (and one line in the log saying why) when it does not
    load or changes what only a restart applies."""
    try:
        candidate = reread()
    except RegistryAuthError as exc:
        log.error("SIGHUP ignored: %s", exc)  # noqa: TRY400 - one line naming the key
        return None
    except Exception as exc:  # noqa: BLE001 - a config nested past Python's recursion limit...
        log.error("SIGHUP ignored: the config cannot be read (%s)", type(exc).__name__)  # noqa: TRY400
        return None
    fixed = [
        key
        for key in changed_settings(running, candidate)
        if key in RESTART_ONLY or key.partition(".")[0] in RESTART_ONLY
    ]
    if fixed:
        log.error("SIGHUP ignored: %s changed: only a restart applies it", ", ".join(fixed))
        return None
    return candidate


def _refused(reread: Reread | None) -> bool:
    """False, after recording a refused SIGHUP for /readyz and /metrics (a roll of the TLS
    watch, without `reread`, says nothing about the config file)."""
    if reread is not None:
        set_config_refused(True)
    return False


def warn_unapplied(reread: Reread, running: Settings) -> None:
    """One process (`workers: 1`) cannot restart itself onto a new config: after a SIGHUP it
    says when the config no longer is the one it runs on (and what differs, by name)."""
    try:
        changed = changed_settings(running, reread())
    except RegistryAuthError as exc:
        log.error("SIGHUP: the config does not load: %s (it would not start)", exc)  # noqa: TRY400
        set_config_refused(True)
        return
    except Exception as exc:  # noqa: BLE001 - never end the reload loop that runs this
        log.error("SIGHUP: the config cannot be read (%s)", type(exc).__name__)  # noqa: TRY400
        set_config_refused(True)
        return
    set_config_refused(bool(changed))
    if changed:
        log.warning(
            "SIGHUP: the config changed (%s): with one worker process (`workers: 1`, or "
            "`workers: 0` on one CPU) SIGHUP reloads users, robots, ACL, keys and TLS only; "
            "restart to apply it",
            ", ".join(changed),
        )
    else:
        log.info(
            "SIGHUP: the config is unchanged; users, robots, ACL, keys and TLS reload when "
            "they change. With one worker process, a backend's secret or CA file read at "
            "start applies at the next restart"
        )


def changed_settings(old: Settings, new: Settings) -> list[str]:
    """The settings that differ, by name (`limits.header_timeout` for a key of a section);
    never their values, which may be secret."""
    changed = []
    for name in type(old).model_fields:
        before, after = getattr(old, name), getattr(new, name)
        if before == after:
            continue
        if isinstance(before, BaseModel) and type(after) is type(before):
            changed += [f"{name}.{key}" for key in type(before).model_fields
                        if getattr(before, key) != getattr(after, key)]  # fmt: skip
        else:
            changed.append(name)
    return changed
