"""More real DNS servers for the DNS-01 tests: a CNAME delegation in BIND9, and PowerDNS.

Loaded as a plugin by ``tests/conftest.py``. Fixtures:

* ``bind_delegation`` (session): BIND9 ``named -g`` on a free port with two zones (and a local
  root zone: it also resolves recursively, as the resolver of a CA does, never leaving itself). ``cname.test``
  holds only CNAMEs (no update is allowed there): ``_acme-challenge.wild`` and
  ``_acme-challenge.lexi`` point into ``delegated.test`` (one link), ``_acme-challenge.chain``
  through ``hop.cname.test`` (two links), ``_acme-challenge.long`` through twelve links,
  ``_acme-challenge.loop`` loops. ``delegated.test``
  takes TXT updates signed with a hmac-sha256 TSIG key. Yields :class:`BindDelegation`.
* ``powerdns`` (session): PowerDNS Authoritative (Debian ``pdns-server`` and
  ``pdns-backend-sqlite3``) on a free DNS port with its HTTP API (``X-API-Key``) on another,
  serving ``lexicon.test``. Yields :class:`PowerDns`.

Each server is stopped by its fixture. A missing binary skips the tests locally and fails them
on CI (``require_binary``).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import secrets
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import httpx
import pytest

from dns_servers import TSIG_KEY_NAME, BindServer, free_dual_port
from helpers import require_binary

__all__ = ["BindDelegation", "PowerDns", "bind_delegation", "powerdns"]

ALIAS_ZONE = "cname.test"
DELEGATED_ZONE = "delegated.test"
PDNS_ZONE = "lexicon.test"


@dataclasses.dataclass(frozen=True)
class BindDelegation:
    bind: BindServer  # its zone is the delegated one, where the TXT records go
    alias_zone: str  # holds the CNAMEs of the _acme-challenge names

    @property
    def host_port(self) -> str:
        return self.bind.host_port


def _conf(root: Path, port: int, secret: str) -> str:
    return f"""
options {{
    directory "{root}";
    pid-file "{root}/named.pid";
    session-keyfile "{root}/session.key";
    managed-keys-directory "{root}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    // Recursive, as the resolver a CA asks is: a TXT query for an alias gets the CNAME and the TXT
    // at its end (an authoritative-only BIND stops at the CNAME). The root zone is local too, so
    // no query ever leaves this server.
    recursion yes;
    allow-recursion {{ 127.0.0.1; }};
    allow-query {{ any; }};
    dnssec-validation no;
    notify no;
}};
controls {{ }};
key "{TSIG_KEY_NAME}" {{
    algorithm hmac-sha256;
    secret "{secret}";
}};
zone "." {{
    type primary;
    file "{root}/db.root";
}};
zone "{ALIAS_ZONE}" {{
    type primary;
    file "{root}/db.{ALIAS_ZONE}";
}};
zone "{DELEGATED_ZONE}" {{
    type primary;
    file "{root}/db.{DELEGATED_ZONE}";
    update-policy {{ grant {TSIG_KEY_NAME} zonesub TXT; }};
}};
"""


def _zone(name: str, body: str = "") -> str:
    return f"""$TTL 60
@       IN SOA ns1.{name}. hostmaster.{name}. 1 3600 600 86400 60
@       IN NS  ns1.{name}.
ns1     IN A   127.0.0.1
{body}"""


_ALIASES = f"""_acme-challenge.wild   IN CNAME x.{DELEGATED_ZONE}.
_acme-challenge.lexi   IN CNAME lexi.{DELEGATED_ZONE}.
_acme-challenge.chain  IN CNAME hop.{ALIAS_ZONE}.
hop                    IN CNAME y.{DELEGATED_ZONE}.
_acme-challenge.loop   IN CNAME loop2.{ALIAS_ZONE}.
loop2                  IN CNAME _acme-challenge.loop.{ALIAS_ZONE}.
_acme-challenge.long   IN CNAME l1.{ALIAS_ZONE}.
""" + "".join(f"l{n}                     IN CNAME l{n + 1}.{ALIAS_ZONE}.\n" for n in range(1, 11)) + f"""\
l11                    IN CNAME z.{DELEGATED_ZONE}.
"""


_ROOT_ZONE = f"""$TTL 60
@       IN SOA ns1. hostmaster. 1 3600 600 86400 60
@       IN NS  ns1.
ns1.    IN A   127.0.0.1
{ALIAS_ZONE}.     IN NS ns1.{ALIAS_ZONE}.
ns1.{ALIAS_ZONE}. IN A  127.0.0.1
{DELEGATED_ZONE}.     IN NS ns1.{DELEGATED_ZONE}.
ns1.{DELEGATED_ZONE}. IN A  127.0.0.1
"""


def _wait_for_soa(
    zone: str, port: int, process: subprocess.Popen[bytes], log: Path, what: str, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}: {log.read_text()[-3000:]}", pytrace=False)
        try:
            response = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
            if response.rcode() == dns.rcode.NOERROR and response.answer:
                return
        except (dns.exception.DNSException, OSError):
            pass
        time.sleep(0.1)
    pytest.fail(f"{what} did not answer within {timeout:.0f}s: {log.read_text()[-3000:]}", pytrace=False)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@pytest.fixture(scope="session")
def bind_delegation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BindDelegation]:
    named = require_binary("named")
    root = tmp_path_factory.mktemp("bind-delegation")
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    port = free_dual_port()
    (root / "named.conf").write_text(_conf(root, port, secret))
    (root / f"db.{ALIAS_ZONE}").write_text(_zone(ALIAS_ZONE, _ALIASES))
    (root / f"db.{DELEGATED_ZONE}").write_text(_zone(DELEGATED_ZONE))
    (root / "db.root").write_text(_ROOT_ZONE)
    log = root / "named.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [named, "-g", "-c", str(root / "named.conf")], stdout=output, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for_soa(DELEGATED_ZONE, port, process, log, "named")
        bind = BindServer(port=port, zone=DELEGATED_ZONE, tsig_key_name=TSIG_KEY_NAME, tsig_secret=secret)
        yield BindDelegation(bind=bind, alias_zone=ALIAS_ZONE)
    finally:
        _stop(process)


# ---------------------------------------------------------------- PowerDNS


@dataclasses.dataclass(frozen=True)
class PowerDns:
    dns_port: int
    api_url: str  # http://127.0.0.1:PORT
    api_key: str
    zone: str  # without trailing dot

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.dns_port}"

    def txt_values(self, fqdn: str) -> set[str]:
        """The TXT values PowerDNS answers for ``fqdn`` right now (over DNS, not the API)."""
        query = dns.message.make_query(fqdn, dns.rdatatype.TXT)
        response = dns.query.tcp(query, "127.0.0.1", port=self.dns_port, timeout=5)
        values: set[str] = set()
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                values.update(b"".join(rdata.strings).decode() for rdata in rrset)
        return values

    def api(self, method: str, path: str, body: object | None = None) -> object:
        response = httpx.request(
            method,
            f"{self.api_url}/api/v1/servers/localhost{path}",
            json=body,
            headers={"X-API-Key": self.api_key},
            timeout=10,
        )
        response.raise_for_status()
        return response.json() if response.content else None


_PDNS_SCHEMA = Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql")


def _pdns_conf(root: Path, dns_port: int, api_port: int, api_key: str) -> str:
    return f"""
launch=gsqlite3
gsqlite3-database={root}/pdns.sqlite3
local-address=127.0.0.1
local-port={dns_port}
socket-dir={root}
api=yes
api-key={api_key}
webserver=yes
webserver-address=127.0.0.1
webserver-port={api_port}
webserver-allow-from=127.0.0.0/8
daemon=no
guardian=no
disable-syslog=yes
loglevel=4
cache-ttl=0
negquery-cache-ttl=0
query-cache-ttl=0
zone-cache-refresh-interval=0
"""


def _wait_for_api(server: PowerDns, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"pdns_server exited with {process.returncode}: {log.read_text()[-3000:]}", pytrace=False)
        try:
            server.api("GET", "/zones")
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    pytest.fail(f"the PowerDNS API did not answer within {timeout:.0f}s: {log.read_text()[-3000:]}", pytrace=False)


@pytest.fixture(scope="session")
def powerdns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerDns]:
    binary = require_binary("pdns_server")
    if not _PDNS_SCHEMA.exists():
        reason = f"{_PDNS_SCHEMA} is missing (Debian pdns-backend-sqlite3)"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must provide it", pytrace=False)
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("powerdns")
    with sqlite3.connect(root / "pdns.sqlite3") as database:
        database.executescript(_PDNS_SCHEMA.read_text())
    dns_port, api_port = free_dual_port(), free_dual_port()
    api_key = "pdns-key-" + secrets.token_urlsafe(18)
    (root / "pdns.conf").write_text(_pdns_conf(root, dns_port, api_port, api_key))
    log = root / "pdns.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [binary, f"--config-dir={root}"], stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        server = PowerDns(dns_port=dns_port, api_url=f"http://127.0.0.1:{api_port}", api_key=api_key, zone=PDNS_ZONE)
        _wait_for_api(server, process, log)
        server.api("POST", "/zones", {"name": f"{PDNS_ZONE}.", "kind": "Native", "nameservers": [f"ns1.{PDNS_ZONE}."]})
        _wait_for_soa(PDNS_ZONE, dns_port, process, log, "pdns_server")
        yield server
    finally:
        _stop(process)
