"""The pair granian's workers load: private copies, one directory per pair."""

from __future__ import annotations

import shutil
import stat

import pytest

from app.api.tls_copies import PairCopies
from app.errors import RegistryAuthError

FIRST = (b"certificate bytes first\n", b"key bytes first\n")
SECOND = (b"certificate bytes second\n", b"key bytes second\n")
THIRD = (b"certificate bytes third\n", b"key bytes third\n")


def test_the_copies_are_private_and_hold_the_pair() -> None:
    copies = PairCopies(FIRST)
    try:
        assert (copies.cert.read_bytes(), copies.key.read_bytes()) == FIRST
        for path in (copies.cert, copies.key):
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(copies.cert.parent.parent.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(copies.cert.parent.parent)


def test_a_new_pair_gets_new_paths_and_the_one_before_stays_for_a_starting_worker() -> None:
    copies = PairCopies(FIRST)
    try:
        first_cert = copies.cert
        copies.replace(SECOND)
        assert copies.cert != first_cert
        assert (copies.cert.read_bytes(), copies.key.read_bytes()) == SECOND
        assert first_cert.read_bytes() == FIRST[0]  # a worker may be about to read it
        copies.replace(THIRD)
        assert not first_cert.exists()  # two back: gone
        assert (copies.cert.read_bytes(), copies.key.read_bytes()) == THIRD
    finally:
        shutil.rmtree(copies.cert.parent.parent)


def test_copies_removed_by_a_cleaner_are_written_again() -> None:
    copies = PairCopies(FIRST)
    try:
        copies.replace(SECOND)
        shutil.rmtree(copies.cert.parent)  # systemd-tmpfiles ages out old files in /tmp
        copies.ensure()
        assert (copies.cert.read_bytes(), copies.key.read_bytes()) == SECOND
        copies.key.unlink()
        copies.ensure()
        assert copies.key.read_bytes() == SECOND[1]
    finally:
        shutil.rmtree(copies.cert.parent.parent)


def test_a_removed_directory_is_made_again_private_and_one_made_by_others_refused() -> None:
    copies = PairCopies(FIRST)
    root = copies.cert.parent.parent
    try:
        shutil.rmtree(root)  # the whole directory aged out
        copies.ensure()
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert copies.key.read_bytes() == FIRST[1]
        shutil.rmtree(root)
        root.mkdir(mode=0o755)  # someone else's, or anyone's to enter
        root.chmod(0o755)
        with pytest.raises(RegistryAuthError, match="not a private directory"):
            copies.ensure()
    finally:
        shutil.rmtree(root, ignore_errors=True)
