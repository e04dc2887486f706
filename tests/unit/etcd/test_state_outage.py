"""The state stores' etcd client after a failure: it answers "unavailable" at once for
RETRY_AFTER seconds instead of making every login wait `etcd_timeout`, then tries again."""

from __future__ import annotations

import logging

import pytest

from app.errors import StateStoreError
from app.etcd.gateway import GatewayError
from app.etcd.state import RETRY_AFTER, open_state_client, state_errors, state_outages
from app.settings_sections import StateSettings
from tests.fake_clock import FakeClock

ENDPOINT = "http://127.0.0.1:9"


def test_after_a_failure_etcd_is_not_asked_until_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = open_state_client(StateSettings(backend="etcd", etcd_endpoints=[ENDPOINT]))
    clock = FakeClock()
    caplog.set_level(logging.WARNING)
    asked: list[float] = []

    def ask_and_fail() -> None:
        with state_errors(client, clock):
            asked.append(clock.now)
            raise GatewayError(f"{ENDPOINT}: connection refused")

    def ask() -> None:
        with state_errors(client, clock):
            asked.append(clock.now)

    with pytest.raises(StateStoreError) as failed:
        ask_and_fail()
    # The endpoint is named once (`where` has it), and the store is called what it is.
    assert str(failed.value) == f"etcd v3 at {ENDPOINT}: connection refused"
    for _ in range(50):  # every login meanwhile: answered at once, etcd not asked
        clock.now += (RETRY_AFTER - 1) / 50
        with pytest.raises(StateStoreError, match=r"not asked: down for \d s"):
            ask()
    assert len(asked) == 1
    clock.now += 1  # RETRY_AFTER since the failure: one request tries again
    ask()
    ask()  # back: every request asks again
    assert len(asked) == 3
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages  # one line as it went, one as it came back
    assert messages[0].startswith(f"state store (etcd v3 at {ENDPOINT}) unavailable: connection")
    assert messages[1] == f"state store (etcd v3 at {ENDPOINT}) available again after 5 s"


def test_a_failed_retry_waits_another_retry_after_and_other_errors_are_no_outage() -> None:
    client = open_state_client(StateSettings(backend="etcd", etcd_endpoints=[ENDPOINT]))
    clock = FakeClock()
    for _ in range(2):  # the first failure, then the retry failing too
        with pytest.raises(StateStoreError), state_errors(client, clock):
            raise GatewayError("timed out")
    clock.now += RETRY_AFTER - 1
    asked = []
    with pytest.raises(StateStoreError, match="not asked: down for"), state_errors(client, clock):
        asked.append(1)
    assert asked == []  # the failed retry began another RETRY_AFTER
    clock.now += 1
    # An error that is not etcd's (a record that does not parse, say) closes the outage: etcd
    # answered.
    with pytest.raises(ValueError, match="not a record"), state_errors(client, clock):
        raise ValueError("not a record")
    with state_errors(client, clock):
        pass


def test_one_outage_of_an_etcd_is_said_once_and_ends_when_any_of_its_clients_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The refresh tokens' and the login counters' clients each said it; and /readyz went on
    warning until the client that saw it (asked only by refresh grants) was asked again."""
    state = StateSettings(backend="etcd", etcd_endpoints=[ENDPOINT])
    tokens, counters = open_state_client(state), open_state_client(state)
    clock = FakeClock()
    caplog.set_level(logging.WARNING)
    for client in (tokens, counters):
        with pytest.raises(StateStoreError), state_errors(client, clock):
            raise GatewayError("connection refused")
    assert [where for where, _ in state_outages()] == [f"etcd v3 at {ENDPOINT}"]
    clock.now += RETRY_AFTER
    with state_errors(counters, clock):
        pass  # the counters' client answers: the etcd is back
    assert state_outages() == []
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 2, messages
    assert messages[1] == f"state store (etcd v3 at {ENDPOINT}) available again after 5 s"


def test_a_login_to_a_hung_etcd_waits_once_not_once_per_store() -> None:
    """The login counters' and the refresh tokens' clients of one etcd each waited their own
    timeout: a `docker login` (a counter read, then a refresh token's write) waited twice."""
    state = StateSettings(backend="etcd", etcd_endpoints=[ENDPOINT])
    counters, tokens = open_state_client(state), open_state_client(state)
    clock = FakeClock()
    waited: list[str] = []

    def read_counters() -> None:
        with state_errors(counters, clock):
            waited.append("counters")
            raise GatewayError("timed out")

    with pytest.raises(StateStoreError, match="timed out"):
        read_counters()
    with pytest.raises(StateStoreError, match="not asked: down for"), state_errors(tokens, clock):
        waited.append("tokens")
    assert waited == ["counters"]
