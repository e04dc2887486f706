"""A real OpenLDAP server (Debian `slapd`) on free loopback ports, with a temporary database.

slapd.conf is written per test session; the base entries, people and a service account are
loaded with `slapadd` before the first start; groups are added over LDAP with `ldapadd` once it
runs, so the memberof overlay fills in each person's memberOf (slapadd runs no overlays).
`stop()` and `start()` keep the database, so a test can take the directory down and back.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from ldap3.utils.dn import escape_rdn

from tests.integration.support.procs import (
    ManagedProcess,
    ProcessError,
    free_port,
    require_program,
    run_checked,
    start_process,
)
from tests.integration.support.tlscerts import TlsFiles, make_tls_files

SUFFIX = "dc=example,dc=org"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
POSIX_GROUPS = f"ou=posixgroups,{SUFFIX}"  # the same groups as posixGroup: memberUid, no DNs
SERVICE_DN = f"cn=registry,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service-Secret-9"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ADMIN_PASSWORD = "admin-Secret-0"
# account -> (password, groups)
PEOPLE_ENTRIES = {
    "carol": ("carol-Secret-3", ["ci", "developers"]),
    "dave": ("dave-Secret-4", ["developers", "qa,ops"]),  # a comma: escaped in the group's DN
    "erin": ("erin-Secret-5", []),
}
GROUP_NAMES = ["ci", "developers", "qa,ops"]

_CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {workdir}/slapd.pid
TLSCACertificateFile {tls.ca}
TLSCertificateFile {tls.cert}
TLSCertificateKeyFile {tls.key}
database mdb
maxsize 33554432
suffix "{suffix}"
rootdn "{admin_dn}"
rootpw {admin_password}
directory {workdir}/db
overlay memberof
access to attrs=userPassword by self read by anonymous auth by * none
access to * by users read by * none
"""


def _seed_ldif() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example",
        f"dn: {PEOPLE}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: registry\nuserPassword: {SERVICE_PASSWORD}",
    ]
    for account, (password, _) in PEOPLE_ENTRIES.items():
        entries.append(
            f"dn: uid={account},{PEOPLE}\nobjectClass: inetOrgPerson\nuid: {account}\n"
            f"cn: {account.title()}\nsn: {account.title()}\nuserPassword: {password}"
        )
    return "\n\n".join(entries) + "\n"


def _groups_ldif() -> str:
    entries = [f"dn: {GROUPS}\nobjectClass: organizationalUnit\nou: groups"]
    for group in GROUP_NAMES:
        members = [a for a, (_, groups) in PEOPLE_ENTRIES.items() if group in groups]
        lines = "".join(f"\nmember: uid={m},{PEOPLE}" for m in members)
        dn = f"cn={escape_rdn(group)},{GROUPS}"
        entries.append(f"dn: {dn}\nobjectClass: groupOfNames\ncn: {group}{lines}")
    entries.append(f"dn: {POSIX_GROUPS}\nobjectClass: organizationalUnit\nou: posixgroups")
    for number, group in enumerate(GROUP_NAMES, start=5000):
        members = [a for a, (_, groups) in PEOPLE_ENTRIES.items() if group in groups]
        lines = "".join(f"\nmemberUid: {m}" for m in members)  # compared case-sensitively
        dn = f"cn={escape_rdn(group)},{POSIX_GROUPS}"
        entries.append(
            f"dn: {dn}\nobjectClass: posixGroup\ncn: {group}\ngidNumber: {number}{lines}"
        )
    return "\n\n".join(entries) + "\n"


@dataclass
class Slapd:
    workdir: Path
    port: int
    tls_port: int
    tls: TlsFiles
    process: ManagedProcess | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://localhost:{self.tls_port}"

    def start(self) -> None:
        slapd = _sbin_program("slapd")
        urls = f"{self.url}/ ldaps://127.0.0.1:{self.tls_port}/"
        # -d 0: stay in the foreground (no fork), so the PID we hold is slapd's own.
        argv = [slapd, "-f", str(self.workdir / "slapd.conf"), "-h", urls, "-d", "0"]
        self.process = start_process("slapd", argv, self.workdir / "logs")
        _wait_for_port(self.process, self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def log(self) -> str:
        return self.process.log() if self.process is not None else "(slapd not running)"


def _sbin_program(name: str) -> str:
    """slapd's programs live in /usr/sbin, which is not always on PATH for a plain user."""
    found = shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
    return found or require_program(name, package="slapd")  # raises, naming the package


def _wait_for_port(process: ManagedProcess, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.running:
            raise ProcessError(f"{process.describe()} died while starting\n{process.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    process.stop()
    raise ProcessError(f"{process.describe()}: port {port} not open after {timeout}s")


def start_slapd(workdir: Path) -> Slapd:
    """Write the config, seed the database, start slapd and add the groups."""
    (workdir / "db").mkdir(parents=True)
    tls = make_tls_files(workdir / "tls")
    config = workdir / "slapd.conf"
    config.write_text(
        _CONFIG.format(
            workdir=workdir,
            tls=tls,
            suffix=SUFFIX,
            admin_dn=ADMIN_DN,
            admin_password=ADMIN_PASSWORD,
        ),
        encoding="utf-8",
    )
    seed = workdir / "seed.ldif"
    seed.write_text(_seed_ldif(), encoding="utf-8")
    slapadd = _sbin_program("slapadd")
    run_checked([slapadd, "-f", str(config), "-l", str(seed)], what="slapadd")
    server = Slapd(workdir, free_port(), free_port(), tls)
    server.start()
    groups = workdir / "groups.ldif"
    groups.write_text(_groups_ldif(), encoding="utf-8")
    ldapadd = require_program("ldapadd", package="ldap-utils")
    try:
        run_checked(
            [
                ldapadd,
                "-x",
                "-H",
                server.url,
                "-D",
                ADMIN_DN,
                "-w",
                ADMIN_PASSWORD,
                "-f",
                str(groups),
            ],
            what="ldapadd groups",
        )
    except BaseException:
        server.stop()
        raise
    return server
