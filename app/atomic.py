"""Atomic file replacement: every file this service writes (keys, users, robots) goes through here.

The data goes to a temporary file in the same directory, with its final mode set before any byte
is written (a key is never readable by others, not even for a moment), is flushed to disk, and is
renamed over the target: a reader sees the old file or the new one, never half of either. A
symlink is written through: its target is replaced and the link stays (an operator who links
users.htpasswd to a shared copy edits that copy). A target that is not a regular file (a device,
a FIFO, a socket; a link's target counts) is refused: the rename would swap /dev/full for a
regular file and report success. Run as root, it writes only where nobody else
could redirect it (check_root_may_write: root-owned directories all the way, no other user's
symlink), and the new file keeps the owner of the file it replaces (a users file the service's
user owns stays readable to it). A file that cannot be written is an error of this package
naming the path, never an OSError.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from app.errors import RegistryAuthError


def write_atomic(
    path: Path,
    data: bytes,
    *,
    mode: int,
    error: type[RegistryAuthError] = RegistryAuthError,
    guard_root: bool = True,
) -> None:
    """Replace `path` (or the file its symlinks lead to) with `data`; `error` names the path
    when that fails (a full disk, a missing or read-only directory, a directory in the way).
    `guard_root=False` for a file that holds nothing secret nor trusted (a document)."""
    try:
        if guard_root:
            check_root_may_write(path, error)
        check_regular_file(path, error)
        _replace(Path(os.path.realpath(path)), data, mode)
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror or exc}") from None


_SPECIAL = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


@contextlib.contextmanager
def editing(path: Path, error: type[RegistryAuthError] = RegistryAuthError) -> Iterator[None]:
    """Hold the lock of `path`'s edits (flock on `.NAME.lock` beside the file its links lead
    to) from the read to the write: two commands editing one file at once each wrote what they
    had read plus their own change, and the first one's change was lost, though both said it
    was made (a robot's secret printed for a robot not in the file). A missing directory is
    left to the write to report."""
    real = Path(os.path.realpath(path))
    with locked(real.with_name(f".{real.name}.lock"), error, missing_ok=True):
        yield


@contextlib.contextmanager
def locked(
    lock: Path, error: type[RegistryAuthError], *, missing_ok: bool = False
) -> Iterator[None]:
    """An exclusive flock on the file `lock` (made 0600 if missing), held for the block: the
    one way writers here take turns (the key ring's, a users or robots file's). `missing_ok`:
    where no lock file can be made (no such directory), the block runs unlocked, and the
    write in it names the path."""
    check_root_may_write(lock, error)
    try:
        # Never through a symlink; read-only: flock needs no more.
        fd = os.open(lock, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileNotFoundError:
        if not missing_ok:
            raise error(f"cannot take the lock {lock}: no such directory") from None
        yield
        return
    except OSError as exc:
        raise error(f"cannot take the lock {lock}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_regular_file(path: Path, error: type[RegistryAuthError]) -> None:
    """Refuse `path` when it exists, its symlinks followed, as a device, a FIFO or a socket:
    neither read (a FIFO blocks for ever) nor replaced (a device node would become a regular
    file). A missing file is made; a directory in the way is refused by the read or the
    rename itself (`Is a directory`)."""
    try:
        st = path.stat()
    except OSError:
        return  # not there (made by the command), or unreachable: the read or write will say
    kind = next((name for test, name in _SPECIAL if test(st.st_mode)), None)
    if kind is not None:
        raise error(f"{path} is {kind}, not a regular file")


def read_regular(path: Path, error: type[RegistryAuthError]) -> bytes:
    """The bytes of `path`, its symlinks followed, or `error` when it is not a regular file:
    opened without waiting (a FIFO no one writes to would block the read for ever, and a
    reload thread with it), then judged by what was opened. OSError as a read gives it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _SPECIAL if test(mode)), "a directory")
            raise error(f"{path} is {kind}, not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read()
    finally:
        os.close(fd)


def check_root_may_write(path: Path, error: type[RegistryAuthError]) -> None:
    """Run as root, refuse `path` when anyone but root could change where it leads: a directory
    on the way (the link's or the real one) that another user owns or may write, or a symlink
    another user made. The service's user could otherwise point root at /etc/shadow or a cron
    directory, by a symlink or by swapping one in between a check and the write; in a path
    only root can change, nobody can. Not root: nothing to check (the kernel decides)."""
    if os.geteuid() != 0:
        return
    given = Path(os.path.abspath(path))  # noqa: PTH100 - not resolved: its links are checked
    for place in (*reversed(given.parents), given):
        try:
            st = place.lstat()
        except OSError:
            break  # not there (made by this command), or no directory: the write will say
        if stat.S_ISLNK(st.st_mode) and st.st_uid != 0:
            _refuse(path, f"{place} is a symlink owned by {_user(st.st_uid)}", st.st_uid, error)
    # Where the write really goes: the file's own links resolved too.
    real_parent = Path(os.path.realpath(given)).parent
    for directory in (*reversed(real_parent.parents), real_parent):
        _check_directory(path, directory, error)


def _check_directory(path: Path, directory: Path, error: type[RegistryAuthError]) -> None:
    try:
        st = directory.stat()
    except OSError:
        return  # not there, or not a directory: the write itself will say
    if st.st_uid != 0:
        _refuse(path, f"{directory} belongs to {_user(st.st_uid)}", st.st_uid, error)
    # Writable by others, it is theirs to rearrange: unless sticky (/tmp), where they cannot
    # touch an entry root owns, and the next step is one (checked in turn).
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        _refuse(path, f"{directory} is writable by group or others", None, error)


def _refuse(path: Path, why: str, uid: int | None, error: type[RegistryAuthError]) -> NoReturn:
    who = (
        f"as {_user(uid)}: sudo -u {_sudo_user(uid)} registry-auth ..."
        if uid
        else "as the user the files are for (sudo -u USER registry-auth ...), not as root"
    )
    raise error(f"will not write {path} as root: {why}; run the command {who}")


def _user(uid: int | None) -> str:
    try:
        return pwd.getpwuid(uid).pw_name if uid is not None else "?"
    except KeyError:
        return f"uid {uid}"


def _sudo_user(uid: int) -> str:
    """How sudo's -u names the user: a uid without a name (a container's, on a host volume)
    is written '#UID'."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"'#{uid}'"


def _replace(target: Path, data: bytes, mode: int) -> None:
    owner = _owner_to_keep(target) if os.geteuid() == 0 else None
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def _owner_to_keep(target: Path) -> tuple[int, int] | None:
    """(uid, gid) of the file being replaced (a users file the service's user owns, in a
    directory of root's); None for a new file."""
    try:
        st = target.stat()
    except FileNotFoundError:
        return None
    return st.st_uid, st.st_gid
