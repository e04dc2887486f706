"""granian's certificate watch, one poll at a time: a renewed pair whose hand-over failed once
(a full /tmp) is handed over at a later poll, never dropped."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.api.supervisor import CertificateWatch
from app.api.tls_copies import PairCopies
from tests.unit.api.test_tls_reload import served_and_another


class Server:
    def __init__(self) -> None:
        self.fail_next = False
        self.pairs: list[bytes] = []
        self.rolls = 0

    def use_pair(self, copies: PairCopies) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError(28, "No space left on device")
        self.pairs.append(copies.cert.read_bytes())

    def roll_workers(self) -> str | None:
        self.rolls += 1
        return None


class Gate:
    def trying_now(self) -> None:
        return

    def worth_trying(self) -> bool:
        return False


def test_a_pair_whose_hand_over_failed_is_handed_over_at_the_next_poll(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    served, renewed, tls = served_and_another(tmp_path, key_type="ec")
    copies = PairCopies(tls.pair)
    server = Server()
    poll = CertificateWatch(tls, copies, server)  # type: ignore[arg-type]
    try:
        poll(Gate())  # type: ignore[arg-type]
        assert (server.pairs, server.rolls) == ([], 0)  # nothing changed
        shutil.copy(renewed / "cert.pem", served / "cert.pem")
        shutil.copy(renewed / "key.pem", served / "key.pem")
        server.fail_next = True
        poll(Gate())  # type: ignore[arg-type]
        assert "No space left on device" in caplog.text
        assert server.rolls == 0
        poll(Gate())  # type: ignore[arg-type]  # the files did not change again: still handed over
        assert server.pairs == [(renewed / "cert.pem").read_bytes()]
        assert server.rolls == 1
        poll(Gate())  # type: ignore[arg-type]
        assert server.rolls == 1  # once
    finally:
        shutil.rmtree(copies.cert.parent.parent)
