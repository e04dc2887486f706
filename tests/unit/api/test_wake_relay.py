"""WakeRelay: a signal handler wakes granian's main loop without taking the Event's lock."""

from __future__ import annotations

import threading

from app.api.supervisor import WakeRelay


def test_waking_does_not_wait_for_the_lock_the_event_is_held_by() -> None:
    # Where SIGTERM hung the main process: its handler ran while the main thread itself was
    # inside the Event's lock (a wait or clear returning), and Event.set waited for it forever.
    # Here another thread holds the lock (for at most 5 s), so a wrong relay fails, not hangs.
    event = threading.Event()
    relay = WakeRelay(event)
    held, let_go = threading.Event(), threading.Event()
    released = threading.Event()

    def hold() -> None:
        with event._cond:  # type: ignore[attr-defined]  # the lock Event.set takes
            held.set()
            let_go.wait(timeout=5)
            released.set()

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(timeout=5)
    relay.wake()
    woke_while_held = not released.is_set()
    let_go.set()
    holder.join()
    assert woke_while_held
    assert event.wait(timeout=5)  # set once the lock was free


def test_every_wake_sets_the_event_again() -> None:
    event = threading.Event()
    relay = WakeRelay(event)
    for _ in range(3):
        relay.wake()
        assert event.wait(timeout=5)
        event.clear()
    assert not event.wait(timeout=0.05)
