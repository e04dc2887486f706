"""Signals that reach `serve` before the server has set its own handlers.

SIGHUP's default action ends a process (status 129), and systemd counts that as a clean exit:
`Restart=on-failure` left the service down after a `systemctl reload` sent within its first
second (a config-management run that restarts, then reloads). SIGUSR1 (the watchdog's and an
operator's way to see the stacks) ended it too. From the first moment of `serve`, a SIGHUP is
remembered, and applied once the server's own handler is in place (app.api.reloading,
app.api.supervisor); SIGUSR1 writes the stacks, as it does later.
"""

from __future__ import annotations

import faulthandler
import signal
from types import FrameType

_pending = False


def hold_early_signals() -> None:
    signal.signal(signal.SIGHUP, _remember)
    faulthandler.register(signal.SIGUSR1, all_threads=True, chain=False)


def _remember(_signum: int, _frame: FrameType | None) -> None:
    global _pending  # noqa: PLW0603 - set from a signal handler: a flag is all it may touch
    _pending = True


def take_early_hangup() -> bool:
    """Whether a SIGHUP came before the server's handler; forgotten once asked."""
    global _pending
    pending, _pending = _pending, False
    return pending
