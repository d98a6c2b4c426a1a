"""Real DNS servers for the DNS-01 tests, on 127.0.0.1.

Loaded as a plugin by ``tests/conftest.py``. Fixtures:

* ``bind_server`` (session): BIND9 ``named -g`` (Debian ``bind9``) on a free port (UDP and TCP),
  primary for ``certreconcile.test`` (SOA, NS ``ns1.certreconcile.test``, ``A 127.0.0.1`` for
  ``ns1`` and ``*``), accepting TXT updates signed with one hmac-sha256 TSIG key. Yields
  :class:`BindServer`.
* ``moto_route53`` (session): a public hosted zone ``route53.certreconcile.test`` on the
  ``moto_kms`` server (moto serves every AWS service on one port). Yields :class:`MotoRoute53`.
* ``cloudflare_api`` (function): a Cloudflare v4 API test server (zones and TXT DNS records,
  ``Authorization: Bearer`` checked) over HTTPS with a throw-away CA; every record it holds is
  also published to ``bind_server`` by TSIG update, as Cloudflare publishes to its name servers.
  Yields :class:`CloudflareApi`.

Each server is stopped by its fixture. A missing binary skips the tests locally and fails them
on CI (``require_binary``).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import secrets
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import dns.exception
import dns.message
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.tsig
import dns.update
import pytest

from acme_servers import make_tls_bundle
from helpers import require_binary
from kms_servers import MotoKms

__all__ = [
    "BindServer",
    "CloudflareApi",
    "MotoRoute53",
    "bind_server",
    "cloudflare_api",
    "free_dual_port",
    "moto_route53",
]

BIND_ZONE = "certreconcile.test"
TSIG_KEY_NAME = "certreconcile-test"


@dataclasses.dataclass(frozen=True)
class BindServer:
    port: int
    zone: str  # without trailing dot, e.g. "certreconcile.test"
    tsig_key_name: str
    tsig_secret: str  # base64, hmac-sha256
    address: str = "127.0.0.1"

    @property
    def host_port(self) -> str:
        return f"{self.address}:{self.port}"

    def txt_values(self, fqdn: str) -> set[str]:
        """The TXT values BIND answers for ``fqdn`` right now."""
        query = dns.message.make_query(fqdn, dns.rdatatype.TXT)
        response = dns.query.tcp(query, self.address, port=self.port, timeout=5)
        values: set[str] = set()
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.TXT:
                values.update(b"".join(rdata.strings).decode() for rdata in rrset)
        return values

    def update_txt(self, fqdn: str, value: str, *, add: bool) -> None:
        """Add or delete one TXT value by a signed dynamic update (what a provider would do)."""
        key = dns.tsig.Key(self.tsig_key_name, self.tsig_secret, dns.tsig.HMAC_SHA256)
        update = dns.update.UpdateMessage(self.zone, keyring=key)
        rdata = dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, [value.encode()])
        if add:
            update.add(fqdn + ".", 60, rdata)
        else:
            update.delete(fqdn + ".", rdata)
        response = dns.query.tcp(update, self.address, port=self.port, timeout=5)
        assert response.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(response.rcode())


def free_dual_port() -> int:
    """A port on 127.0.0.1 free for both UDP and TCP (a DNS server needs both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port for UDP and TCP")


def _named_conf(root: Path, port: int, secret: str) -> str:
    return f"""
options {{
    directory "{root}";
    pid-file "{root}/named.pid";
    session-keyfile "{root}/session.key";
    managed-keys-directory "{root}";
    listen-on port {port} {{ 127.0.0.1; }};
    listen-on-v6 {{ none; }};
    recursion no;
    allow-query {{ any; }};
    dnssec-validation no;
    notify no;
}};
controls {{ }};
key "{TSIG_KEY_NAME}" {{
    algorithm hmac-sha256;
    secret "{secret}";
}};
zone "{BIND_ZONE}" {{
    type primary;
    file "{root}/db.{BIND_ZONE}";
    update-policy {{ grant {TSIG_KEY_NAME} zonesub TXT; }};
}};
"""


_ZONE_FILE = f"""$TTL 60
@       IN SOA ns1.{BIND_ZONE}. hostmaster.{BIND_ZONE}. 1 3600 600 86400 60
@       IN NS  ns1.{BIND_ZONE}.
ns1     IN A   127.0.0.1
*       IN A   127.0.0.1
"""


def _wait_for_dns(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    query = dns.message.make_query(BIND_ZONE, dns.rdatatype.SOA)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"named exited with {process.returncode}: {log.read_text()[-3000:]}", pytrace=False)
        try:
            response = dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5)
            if response.rcode() == dns.rcode.NOERROR and response.answer:
                return
        except (dns.exception.DNSException, OSError):
            pass
        time.sleep(0.1)
    pytest.fail(f"named did not answer within {timeout:.0f}s: {log.read_text()[-3000:]}", pytrace=False)


@pytest.fixture(scope="session")
def bind_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BindServer]:
    named = require_binary("named")
    root = tmp_path_factory.mktemp("bind")
    secret = base64.b64encode(secrets.token_bytes(32)).decode()
    port = free_dual_port()
    conf = root / "named.conf"
    conf.write_text(_named_conf(root, port, secret))
    (root / f"db.{BIND_ZONE}").write_text(_ZONE_FILE)
    log = root / "named.log"
    with log.open("wb") as output:
        # -g: foreground, log to stderr; no -u: the test user runs it (root in CI containers is fine)
        process = subprocess.Popen(
            [named, "-g", "-c", str(conf)], stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_for_dns(port, process, log)
        yield BindServer(port=port, zone=BIND_ZONE, tsig_key_name=TSIG_KEY_NAME, tsig_secret=secret)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


# ---------------------------------------------------------------- Route 53 on moto


@dataclasses.dataclass(frozen=True)
class MotoRoute53:
    endpoint_url: str
    hosted_zone_id: str  # without the "/hostedzone/" prefix
    zone: str  # without trailing dot
    region: str
    env: dict[str, str]  # AWS credentials and region

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "route53",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        )

    def txt_values(self, fqdn: str) -> set[str]:
        sets = self.client().list_resource_record_sets(
            HostedZoneId=self.hosted_zone_id, StartRecordName=fqdn, StartRecordType="TXT", MaxItems="1"
        )["ResourceRecordSets"]
        for record_set in sets:
            if record_set["Name"].rstrip(".") == fqdn and record_set["Type"] == "TXT":
                return {record["Value"].strip('"') for record in record_set["ResourceRecords"]}
        return set()


@pytest.fixture(scope="session")
def moto_route53(moto_kms: MotoKms) -> MotoRoute53:
    zone = "route53.certreconcile.test"
    server = MotoRoute53(
        endpoint_url=moto_kms.endpoint_url, hosted_zone_id="", zone=zone, region=moto_kms.region, env=moto_kms.env
    )
    created = server.client().create_hosted_zone(Name=zone + ".", CallerReference=str(uuid.uuid4()))
    zone_id = created["HostedZone"]["Id"].rsplit("/", 1)[-1]
    return dataclasses.replace(server, hosted_zone_id=zone_id)


# ---------------------------------------------------------------- Cloudflare API test server


@dataclasses.dataclass
class _CloudflareState:
    token: str
    zones: dict[str, str]  # zone id -> name
    records: dict[str, dict[str, Any]]  # record id -> {"id", "zone_id", "type", "name", "content", "ttl"}
    bind: BindServer | None
    requests: list[str] = dataclasses.field(default_factory=list)  # "METHOD path" of every authorised request
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


@dataclasses.dataclass(frozen=True)
class CloudflareApi:
    api_base: str  # e.g. https://127.0.0.1:PORT/client/v4
    ca_bundle: Path
    token: str
    zone_id: str
    zone: str
    state: _CloudflareState

    def txt_values(self, fqdn: str) -> set[str]:
        with self.state.lock:
            return {
                str(record["content"]).strip('"')
                for record in self.state.records.values()
                if record["name"] == fqdn and record["type"] == "TXT"
            }


def _handler(state: _CloudflareState) -> type[BaseHTTPRequestHandler]:
    record_path = re.compile(r"^/client/v4/zones/([^/]+)/dns_records(?:/([^/]+))?$")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, code: int, message: str) -> None:
            self._send(status, {"success": False, "errors": [{"code": code, "message": message}], "result": None})

        def _ok(self, result: Any, status: int = 200) -> None:
            self._send(status, {"success": True, "errors": [], "messages": [], "result": result})

        def _authorised(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                self._error(403, 9109, "Invalid access token")
                return False
            with state.lock:
                state.requests.append(f"{self.command} {self.path}")
            return True

        def do_GET(self) -> None:
            if not self._authorised():
                return
            parts = urlsplit(self.path)
            query = {key: values[0] for key, values in parse_qs(parts.query).items()}
            if parts.path == "/client/v4/zones":
                zones = [
                    {"id": zone_id, "name": name, "status": "active"}
                    for zone_id, name in state.zones.items()
                    if "name" not in query or query["name"] == name
                ]
                self._ok(zones)
                return
            match = record_path.match(parts.path)
            if not match or match.group(2) or match.group(1) not in state.zones:
                self._error(404, 7003, "Could not route to the path")
                return
            with state.lock:
                found = [
                    dict(record)
                    for record in state.records.values()
                    if record["zone_id"] == match.group(1)
                    and query.get("type", record["type"]) == record["type"]
                    and query.get("name", record["name"]) == record["name"]
                    and query.get("content", record["content"]) == record["content"]
                ]
            self._ok(found)

        def do_POST(self) -> None:
            if not self._authorised():
                return
            match = record_path.match(self.path)
            if not match or match.group(2) or match.group(1) not in state.zones:
                self._error(404, 7003, "Could not route to the path")
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            if body.get("type") != "TXT" or not body.get("name") or not body.get("content"):
                self._error(400, 9000, "DNS record type, name and content are required")
                return
            with state.lock:
                for record in state.records.values():
                    if (record["name"], record["type"], record["content"]) == (body["name"], "TXT", body["content"]):
                        self._error(400, 81058, "An identical record already exists.")
                        return
                record = {
                    "id": uuid.uuid4().hex,
                    "zone_id": match.group(1),
                    "zone_name": state.zones[match.group(1)],
                    "type": "TXT",
                    "name": body["name"],
                    "content": body["content"],
                    "ttl": int(body.get("ttl", 1)),
                }
                state.records[record["id"]] = record
            if state.bind is not None:
                state.bind.update_txt(body["name"], str(body["content"]).strip('"'), add=True)
            self._ok(record)

        def do_DELETE(self) -> None:
            if not self._authorised():
                return
            match = record_path.match(self.path)
            if not match or not match.group(2):
                self._error(404, 7003, "Could not route to the path")
                return
            with state.lock:
                record = state.records.pop(match.group(2), None)
            if record is None:
                self._error(404, 81044, "Record does not exist.")
                return
            if state.bind is not None:
                state.bind.update_txt(record["name"], str(record["content"]).strip('"'), add=False)
            self._ok({"id": record["id"]})

    return Handler


@pytest.fixture
def cloudflare_api(tmp_path: Path, bind_server: BindServer) -> Iterator[CloudflareApi]:
    ca_bundle, cert, key = make_tls_bundle(tmp_path / "cloudflare-tls")
    zone_id = uuid.uuid4().hex
    state = _CloudflareState(
        token="cf-token-" + secrets.token_urlsafe(24),
        zones={zone_id: bind_server.zone, uuid.uuid4().hex: "other.example"},
        records={},
        bind=bind_server,
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield CloudflareApi(
            api_base=f"https://127.0.0.1:{server.server_address[1]}/client/v4",
            ca_bundle=ca_bundle,
            token=state.token,
            zone_id=zone_id,
            zone=bind_server.zone,
            state=state,
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
