"""Secret canaries: recognisable secrets are seeded, then every output channel is scanned for them.

Two scenarios drive the real ``certreconcile`` command through success and failure paths:

* **embedded**: the embedded default database (no ``CERTRECONCILE_DATABASE_URL``), the local KMS,
  an ACME issuer with External Account Binding (Pebble, resolving through BIND) using HTTP-01
  and DNS-01 (rfc2136, TSIG), a local CA (EC and RSA keys), a files target, a webhook target
  (HMAC secret, mutual TLS) that first refuses, a target whose reload fails and a CA that is
  unreachable; a wrong EAB key, a wrong TSIG secret and a wrong local KMS key file; then every
  command (validate, plan --out/--comment-dir, apply, status, audit, audit verify, rotate,
  revoke, run --once, run with metrics, probes and JSON logs at debug, kms rewrap, db
  upgrade/roles/stop, schema, init) in each ``--format`` it has.
* **vault**: the session's test PostgreSQL, the Vault/OpenBao transit KMS (a token), a wrong token.

Every command runs with ``CERTRECONCILE_DEBUG=1`` and Python's logging at DEBUG for every logger
(certreconcile's and its libraries': acme, requests, urllib3, dnspython, hvac, psycopg), written
to a file per command; the PostgreSQL servers log every statement with its parameters.

Canaries (tests/canaries.py): the local KMS master keys, every private key certreconcile made
(each stored envelope opened with the KMS: certificate keys, journalled keys, the local CA key,
the ACME account key), the EAB HMAC keys, the webhook secret and client key, the TSIG secrets,
the Vault tokens and the embedded database's password. Channels: stdout, stderr, the debug logs,
plan files and PR comments, every file written under the test's folders (except the targets'
``privkey.pem``, the one allowed plaintext copy, which must be mode 0600, and the secrets' own
files), the PostgreSQL server log, ``pg_dump --data-only`` and the audit rows. None may be found.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from acme_servers import Pebble, start_pebble
from canaries import CanaryScan, key_canary, secret_canary
from certreconcile.actual.embedded import EmbeddedPostgres, postgres_bin_dir, stop_embedded
from certreconcile.crypto.envelope import open_envelope, parse_envelope
from certreconcile.errors import KmsError
from certreconcile.plugins.kms.local import LocalKms
from certreconcile.plugins.kms.vault import VaultKms
from certreconcile.plugins.ports import EncryptionContext, Kms
from dns_servers import BindServer
from helpers import server_scratch_dir
from kms_servers import BaoTransit, free_port
from webhook_servers import WebhookServer, make_client_identity, running_webhook_server

pytestmark = pytest.mark.integration

# Runs the CLI with every logger at DEBUG into the file $CANARY_DEBUG_LOG (warnings too).
_WRAPPER = (
    "import logging, os, sys\n"
    "logging.basicConfig(level=logging.DEBUG, filename=os.environ['CANARY_DEBUG_LOG'],\n"
    "                    format='%(asctime)s %(name)s %(levelname)s %(message)s')\n"
    "logging.captureWarnings(True)\n"
    "from certreconcile.cli.main import main\n"
    "main(sys.argv[1:])\n"
)


@dataclass
class Cli:
    """The real command, run as a subprocess; every output kept for the scan."""

    env: dict[str, str]
    cwd: Path
    debug_dir: Path
    outputs: list[tuple[str, str, str, Path]] = field(default_factory=list)  # command, stdout, stderr, debug log
    counter: Iterator[int] = field(default_factory=itertools.count)
    others: list[tuple[str, str, str]] = field(default_factory=list)  # channel kind, where, text

    def __call__(
        self, *args: str, expect: int | tuple[int, ...] | None = 0, extra: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        log = self.debug_dir / f"{next(self.counter):02d}-{args[0]}.log"
        env = {**self.env, **(extra or {}), "CANARY_DEBUG_LOG": str(log)}
        result = subprocess.run(
            [sys.executable, "-c", _WRAPPER, *args],
            capture_output=True, text=True, env=env, cwd=self.cwd, timeout=300, check=False,
        )  # fmt: skip
        self.outputs.append((" ".join(args), result.stdout, result.stderr, log))
        if expect is not None:
            allowed = (expect,) if isinstance(expect, int) else expect
            assert result.returncode in allowed, (args, result.returncode, result.stdout[-3000:], result.stderr[-3000:])
        return result

    def many(self, *calls: tuple[Any, ...]) -> None:
        """Read-only commands at once (each ``(*args, expected exit codes)``): the test stays short."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = [pool.submit(self, *call[:-1], expect=call[-1]) for call in calls]
        for future in futures:
            future.result()

    def scan_outputs(self, scan: CanaryScan) -> None:
        for command, stdout, stderr, log in self.outputs:
            scan.scan("stdout", command, stdout)
            scan.scan("stderr", command, stderr)
            if log.exists():
                scan.scan_file("debug-log", log)
        for kind, where, text in self.others:
            scan.scan(kind, where, text)

    def debug_text(self) -> str:
        return "".join(log.read_text() for *_, log in self.outputs if log.exists())


def base_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERTRECONCILE_", "VAULT_", "BAO_"))}
    home.mkdir(parents=True, exist_ok=True)
    (home / "tmp").mkdir(exist_ok=True)
    env.update({"NO_COLOR": "1", "USER": "canary-tester", "CERTRECONCILE_DEBUG": "1", "HOME": str(home),
                "TMPDIR": str(home / "tmp"), "XDG_CACHE_HOME": str(home / ".cache")})  # fmt: skip
    return env


def context_of(envelope_json: str) -> EncryptionContext:
    mapping = parse_envelope(envelope_json)["context"]
    assert isinstance(mapping, dict)
    return EncryptionContext(
        table=mapping["table"], row_id=mapping["row_id"],
        key_version=int(mapping["key_version"]), purpose=mapping["purpose"],
    )  # fmt: skip


_ENVELOPES = (
    "SELECT 'Certificate ' || name, key_ref FROM Certificate WHERE key_ref <> ''",
    "SELECT 'LocalCa ' || issuer_name, key_ref FROM LocalCa",
    "SELECT 'AcmeAccount ' || directory_url, key_ref FROM AcmeAccount",
    "SELECT 'journalled key ' || name, detail->>'key_ref' FROM ApplyStep WHERE detail ? 'key_ref'",
)


def seed_stored_keys(scan: CanaryScan, url: str, kms_options: list[Kms]) -> dict[str, int]:
    """Open every stored envelope (with whichever KMS sealed it) and seed its private key as a canary."""
    opened: dict[str, int] = {}
    with psycopg.connect(url) as conn:
        rows = [row for query in _ENVELOPES for row in conn.execute(query).fetchall()]
    for label, envelope in rows:
        kind = label.split(" ")[0]
        for kms in kms_options:
            try:
                pem = open_envelope(kms, envelope, context_of(envelope)).reveal()
            except KmsError:  # sealed under another master key (the wrong-key run): try the next
                pem = None
            if pem is None:
                continue
            scan.add(key_canary(f"private key ({label}, {context_of(envelope).row_id[:8]})", pem))
            opened[kind] = opened.get(kind, 0) + 1
            break
        else:
            pytest.fail(f"no KMS of the test opens the envelope of {label}")
    return opened


def scan_database(scan: CanaryScan, url: str) -> None:
    """Every table's data (pg_dump --data-only) and the audit rows as JSON."""
    dump = subprocess.run(
        [str(postgres_bin_dir() / "pg_dump"), "--data-only", "--no-owner", "-d", url],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert dump.returncode == 0, dump.stderr
    assert "COPY " in dump.stdout and "certaudit" in dump.stdout.lower()
    scan.scan("pg_dump", "--data-only", dump.stdout)
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT row_to_json(a)::text FROM CertAudit a ORDER BY seq").fetchall()
    assert len(rows) > 10
    for (row,) in rows:
        scan.scan("audit-row", row[:80], row)


def scan_files(scan: CanaryScan, root: Path, *, skip: set[Path], key_files: list[Path]) -> None:
    """Every file under ``root``; a target's privkey.pem (the allowed copy) is checked for mode 0600."""
    for path in sorted(root.rglob("*")):
        if any(path == s or s in path.parents for s in skip) or path.is_symlink() or not path.is_file():
            continue
        if path.name == "privkey.pem":
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
            key_files.append(path)
            continue
        kind = "plan-file" if path.parent.name == "plans" else "comment" if path.suffix == ".md" else "file"
        scan.scan_file(kind, path)


def report(scan: CanaryScan, title: str) -> None:
    print(f"\nsecret canaries, {title}: {scan.summary()}")  # the figures for the closing note
    for canary in scan.canaries:
        print(f"  {canary.name}: {len(canary.needles)} encodings")
    assert not scan.hits, "secrets leaked:\n" + "\n".join(f"{c} as {e} in {w}" for c, e, w in scan.hits[:50])


# ---------------------------------------------------------------- the embedded scenario


@pytest.fixture
def pebble_eab(tmp_path: Path, bind_server: BindServer) -> Iterator[tuple[Pebble, str, str]]:
    """A Pebble requiring EAB that resolves every name through BIND (HTTP-01 and DNS-01 alike)."""
    key_id, hmac_key = "kid-canary", base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    with start_pebble(tmp_path / "pebble-eab", bind_server.host_port, eab_keys={key_id: hmac_key}) as server:
        yield server, key_id, hmac_key


def embedded_doc(pebble: Pebble, bind: BindServer, hook: WebhookServer, inputs: Path, dead_port: int) -> dict[str, Any]:
    acme = {"directory": pebble.directory_url, "ca_bundle": str(pebble.ca_bundle), "order_timeout": "60s",
            "http01": {"standalone": {"listen": f"127.0.0.1:{pebble.http01_port}"}},
            "eab": {"key_id_env": "EAB_KID", "hmac_key_env": "EAB_HMAC"}}  # fmt: skip
    zone = bind.zone
    return {
        "kms": {"local": {}},
        "issuers": {
            "pebble": {"acme": acme},
            "dead": {"acme": {"directory": f"https://127.0.0.1:{dead_port}/dir", "order_timeout": "10s"}},
            "internal": {"local_ca": {"common_name": "Canary CA"}},
        },
        "dns_providers": {
            "corp-dns": {
                "rfc2136": {
                    "server": bind.host_port,
                    "tsig_key_name": bind.tsig_key_name,
                    "tsig_secret_env": "CORP_TSIG_SECRET",
                },
                "nameservers": [bind.host_port],
                "propagation_timeout": "30s",
            }
        },
        "targets": {
            "deploy": {"files": {"dir": "out"}},
            "flaky": {"files": {"dir": "flaky", "reload_command": "false"}},
            "hook": {
                "webhook": {
                    "url": hook.url("/hook"),
                    "secret_env": "HOOK_SECRET",
                    "ca_bundle": str(hook.ca),
                    "client_cert": str(inputs / "client.pem"),
                    "client_key": str(inputs / "client-key.pem"),
                }
            },
        },
        "certificates": [
            {"name": "acme-http", "domains": [f"web.{zone}"], "issuer": "pebble", "targets": ["deploy"]},
            {
                "name": "acme-dns",
                "domains": [f"*.dns.{zone}", f"dns.{zone}"],
                "issuer": "pebble",
                "challenge": "dns-01",
                "dns_provider": "corp-dns",
                "targets": ["deploy"],
            },
            {"name": "local-ec", "domains": ["ec.example.com"], "issuer": "internal", "targets": ["deploy"]},
            {
                "name": "local-rsa",
                "domains": ["rsa.example.com"],
                "issuer": "internal",
                "key": "rsa-2048",
                "targets": ["deploy", "hook"],
            },
            {"name": "unreachable", "domains": ["dead.example.com"], "issuer": "dead", "targets": ["deploy"]},
            {"name": "reload-fails", "domains": ["flaky.example.com"], "issuer": "internal", "targets": ["flaky"]},
        ],
    }


def scrape_metrics(cli: Cli, directory: str, env: dict[str, str]) -> str:
    """`run` with --metrics-port 0 and JSON logs at debug: one cycle, the metrics page and the probes read,
    SIGTERM (it exits 0)."""
    log, errors = cli.debug_dir / "run-metrics.log", cli.debug_dir / "run-metrics.stderr"
    with errors.open("w") as stderr_file:
        process = subprocess.Popen(
            [sys.executable, "-c", _WRAPPER, "run", "--dir", directory, "--metrics-port", "0", "--interval", "1h",
             "--log-format", "json", "--log-level", "debug"],
            env={**env, "CANARY_DEBUG_LOG": str(log)}, cwd=cli.cwd, stdout=subprocess.PIPE, stderr=stderr_file,
            text=True,
        )  # fmt: skip
    page, address, deadline = "", None, time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            text = errors.read_text()
            address = next((w for w in text.split() if w.startswith("http://127.0.0.1:")), None)
            if address and "cycle " in text:
                with urllib.request.urlopen(address, timeout=10) as response:  # noqa: S310 - local
                    page = response.read().decode()
                for probe in ("/healthz", "/readyz"):  # 503 too: a channel either way
                    try:
                        with urllib.request.urlopen(address.replace("/metrics", probe), timeout=10) as answer:  # noqa: S310
                            cli.others.append(("probe", probe, answer.read().decode()))
                    except urllib.error.HTTPError as exc:
                        cli.others.append(("probe", probe, exc.read().decode()))
                break
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=120)
    cli.outputs.append(("run --metrics-port 0", stdout, errors.read_text(), log))
    assert "certreconcile" in page, (page, errors.read_text()[-2000:])
    json_lines = [json.loads(line) for line in errors.read_text().splitlines()]  # every stderr line is JSON
    assert any(line.get("step") == "cycle" for line in json_lines)  # the fields were written
    cli.others.append(("metrics", address or "", page))
    return page


def run_embedded_commands(cli: Cli, d: str, env_ok: dict[str, str], env_bad: dict[str, str], scratch: Path,
                          hook: WebhookServer) -> None:  # fmt: skip
    """Every command, in each format, through the failures (wrong secrets, refusing webhook, dead CA) to success."""
    plan_file = str(scratch / "plans" / "plan.json")
    cli("plan", "--dir", d, "--out", plan_file, "--comment-dir", str(scratch / "comments"), "--detailed-exitcode",
        expect=2)  # fmt: skip
    cli.many(("validate", "--dir", d, 0), ("validate", "--dir", d, "--format", "json", 0),
             ("plan", "--dir", d, "--format", "json", 0), ("schema", 0))  # fmt: skip
    # The first apply (the saved plan): a wrong EAB key, the webhook refusing, the CA unreachable, a reload failing.
    hook.mode = "fail"
    first = cli("apply", plan_file, "--dir", d, "--auto-approve", extra=env_bad, expect=1)
    for needle in ("acme-account", "reload-fails", "unreachable", "local-rsa"):
        assert needle in first.stdout + first.stderr, (needle, first.stdout[-3000:], first.stderr[-3000:])
    # The right EAB key, a wrong TSIG secret: DNS-01 fails at the update.
    wrong_tsig = {**env_ok, "CORP_TSIG_SECRET": env_bad["CORP_TSIG_SECRET"]}
    cli("rotate", "acme-dns", "--dir", d, extra=wrong_tsig, expect=1)
    hook.mode = "echo"
    cli("apply", "--dir", d, "--auto-approve", "--format", "json", extra=env_ok, expect=(0, 1))
    assert hook.received and hook.received[-1].json()["name"] == "local-rsa"
    cli("rotate", "acme-dns", "--dir", d, extra=env_ok)
    cli("rotate", "acme-http", "--dir", d, "--format", "json", "--reason", "canary", extra=env_ok)
    head = str(scratch / "audit-head.json")
    cli.many(*[("plan", "--dir", d, "--refresh", "--format", fmt, (0, 1, 2)) for fmt in ("text", "markdown", "json")],
             *[("status", "--dir", d, "--format", fmt, (0, 1, 2)) for fmt in ("text", "json")],
             *[("audit", "--dir", d, "--format", fmt, 0) for fmt in ("text", "json")],
             ("audit", "verify", "--dir", d, "--export-head", head, 0),
             ("revoke", "local-ec", "--dir", d, 1),  # still served: refused
             ("db", "roles", "--dir", d, "--print", 0),
             ("db", "upgrade", "--dir", d, "--format", "json", 0))  # fmt: skip
    cli("audit", "verify", "--dir", d, "--head", head, "--format", "json")
    cli("revoke", "local-ec", "--dir", d, "--force", "--reason", "keyCompromise", "--format", "json", extra=env_ok)
    # The wrong local KMS key file: the local CA's key does not open.
    wrong_kms = {**env_ok, "CERTRECONCILE_LOCAL_KMS_KEY_FILE": str(scratch / "inputs" / "wrong-kms.key")}
    wrong = cli("rotate", "local-ec", "--dir", d, "--format", "json", extra=wrong_kms, expect=1)
    assert "kms-wrong-master-key" in wrong.stdout + wrong.stderr, wrong.stdout + wrong.stderr
    cli("run", "--dir", d, "--once", extra=env_ok, expect=(0, 1))
    cli("run", "--dir", d, "--once", "--log-format", "json", "--log-level", "debug", extra=env_ok, expect=(0, 1))
    scrape_metrics(cli, d, {**cli.env, **env_ok})
    new_kms = scratch / "inputs" / "new-kms.yaml"
    new_kms.write_text(yaml.safe_dump({"kms": {"local": {"key_file": str(scratch / "inputs" / "new-kms.key")}}}))
    cli("kms", "rewrap", "--dir", d, "--to", str(new_kms), "--format", "json", expect=(0, 1))
    moved = {**env_ok, "CERTRECONCILE_LOCAL_KMS_KEY_FILE": str(scratch / "inputs" / "new-kms.key")}
    cli("rotate", "local-rsa", "--dir", d, "--reason", "canary", extra=moved)
    cli("init", str(scratch / "initialised"))


def test_no_secret_leaks_on_the_embedded_database(
    pebble_eab: tuple[Pebble, str, str], bind_server: BindServer, tmp_path: Path
) -> None:
    pebble, kid, hmac_key = pebble_eab
    with server_scratch_dir("crt-canary") as scratch:
        repo, inputs = scratch / "repo", scratch / "inputs"
        repo.mkdir()
        client = make_client_identity(inputs)
        shutil.move(client.cert, inputs / "client.pem")
        shutil.move(client.key, inputs / "client-key.pem")
        try:
            with running_webhook_server(inputs / "receiver", client) as hook:
                doc = embedded_doc(pebble, bind_server, hook, inputs, free_port())
                (repo / "certificates.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
                scan = _embedded_scenario(scratch, repo, (kid, hmac_key), bind_server, hook)
        finally:
            stop_embedded(repo, {})
    report(scan, "embedded database, local KMS")


def _embedded_scenario(scratch: Path, repo: Path, eab: tuple[str, str], bind: BindServer,
                       hook: WebhookServer) -> CanaryScan:  # fmt: skip
    inputs, state = scratch / "inputs", repo / ".certreconcile"
    # Start the embedded server first to make it log every statement with its parameters.
    # Make the embedded server log every statement with its parameters, then stop it: the first
    # command starts it again, from an environment holding the secrets (as an operator's shell would).
    server = EmbeddedPostgres(state)
    with psycopg.connect(server.ensure_running(), autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET log_statement = 'all'")
    server.stop()
    (inputs / "wrong-kms.key").write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    (inputs / "wrong-kms.key").chmod(0o600)
    hook_secret = "canary-hook-" + secrets.token_urlsafe(24)
    wrong_hmac = base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    wrong_tsig = base64.b64encode(os.urandom(32)).decode()
    env_ok = {"EAB_KID": eab[0], "EAB_HMAC": eab[1], "CORP_TSIG_SECRET": bind.tsig_secret, "HOOK_SECRET": hook_secret}
    env_bad = {**env_ok, "EAB_HMAC": wrong_hmac, "CORP_TSIG_SECRET": wrong_tsig}
    cli = Cli({**base_env(scratch / "home"), **env_ok}, cwd=scratch, debug_dir=inputs / "debug")
    cli.debug_dir.mkdir()
    (scratch / "plans").mkdir()
    run_embedded_commands(cli, str(repo), env_ok, env_bad, scratch, hook)
    # What the webhook received: its body holds the key (it is a target), its headers only a signature.
    cli.others.extend(("webhook-headers", got.path, json.dumps(got.headers)) for got in hook.received)

    master_keys = [state / "local-kms.key", inputs / "wrong-kms.key", inputs / "new-kms.key"]
    scan = CanaryScan([])
    for path in master_keys:
        scan.add(secret_canary(f"local KMS master key {path.name}", path.read_text().strip()))
    init_key = next((scratch / "initialised").rglob("*.key"))
    scan.add(secret_canary("local KMS master key made by init", init_key.read_text().strip()))
    password = (state / "pgpass").read_text().strip().rsplit(":", 1)[1]
    scan.add(secret_canary("embedded database password", password))
    for name, value in (("EAB HMAC key", eab[1]), ("wrong EAB HMAC key", wrong_hmac), ("webhook secret", hook_secret),
                        ("TSIG secret", bind.tsig_secret), ("wrong TSIG secret", wrong_tsig)):  # fmt: skip
        scan.add(secret_canary(name, value))
    scan.add(key_canary("webhook client key", (inputs / "client-key.pem").read_bytes()))
    # The server outlives the command that started it: its environment must hold none of that command's secrets.
    postmaster = int((state / "pgdata" / "postmaster.pid").read_text().split()[0])
    scan.scan(
        "postgres-server-environ", f"/proc/{postmaster}/environ", Path(f"/proc/{postmaster}/environ").read_bytes()
    )
    url = server.url()
    opened = seed_stored_keys(scan, url, [LocalKms(path, create=False) for path in master_keys])
    assert opened.get("Certificate", 0) >= 5 and opened.get("LocalCa") == 1 and opened.get("AcmeAccount") == 1, opened
    assert opened.get("journalled", 0) >= 1, opened

    scan_database(scan, url)
    stop_embedded(repo, {})  # the log is complete
    scan.scan_file("postgres-log", state / "pgdata" / "log")
    assert "parameters:" in (state / "pgdata" / "log").read_text()  # statements were logged with their values
    cli.scan_outputs(scan)
    debug_text = cli.debug_text()  # the libraries' debug logging was on: ACME messages, DNS, HTTP
    assert "acme.client DEBUG" in debug_text and "urllib3.connectionpool DEBUG" in debug_text
    deployed: list[Path] = []
    skip = {inputs, state / "pgdata", state / "local-kms.key", state / "pgpass", init_key}
    scan_files(scan, scratch, skip=skip, key_files=deployed)
    assert {p.parent.name for p in deployed} >= {"acme-http", "acme-dns", "local-ec", "local-rsa"}
    for path in deployed:  # the allowed copies hold keys the database holds too
        data = path.read_bytes()
        assert any(v in data for c in scan.canaries for k, v in c.needles.items() if "pem-line" in k), path
    return scan


# ---------------------------------------------------------------- the Vault scenario


def _log_every_statement(database_url: str) -> None:
    """The server logs this database's statements with their values: the log is a channel to scan."""
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            psycopg.sql.SQL("ALTER DATABASE {} SET log_statement = 'all'").format(psycopg.sql.Identifier(dbname))
        )


def test_no_secret_leaks_with_the_vault_kms_on_the_test_server(
    bao_transit: BaoTransit, database_url: str, pg_server_log: Path | None, tmp_path: Path
) -> None:
    if pg_server_log is None:  # an outside server: its log is not ours to read
        if os.environ.get("CI"):
            pytest.fail("CI must run the tests on the embedded test server, whose log the canaries scan")
        pytest.skip("CERTRECONCILE_TEST_DATABASE_URL names an outside server: its log cannot be scanned")
    _log_every_statement(database_url)
    log_start = pg_server_log.stat().st_size
    repo, scratch = tmp_path / "repo", tmp_path / "work"
    repo.mkdir()
    doc = {
        "kms": {"vault": {"url": bao_transit.url, "mount": bao_transit.mount, "key": bao_transit.key}},
        "issuers": {"internal": {"local_ca": {"common_name": "Canary Vault CA"}}},
        "targets": {"deploy": {"files": {"dir": "out"}}},
        "certificates": [
            {"name": "vault-ec", "domains": ["ec.vault.example.com"], "issuer": "internal", "targets": ["deploy"]},
            {"name": "vault-rsa", "domains": ["rsa.vault.example.com"], "issuer": "internal", "key": "rsa-3072",
             "targets": ["deploy"]},
        ],
    }  # fmt: skip
    (repo / "certificates.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    debug = tmp_path / "debug"
    debug.mkdir()
    cli = Cli({**base_env(scratch / "home"), "CERTRECONCILE_DATABASE_URL": database_url}, cwd=scratch, debug_dir=debug)
    wrong_token = "s." + secrets.token_urlsafe(18)
    token = {"VAULT_TOKEN": bao_transit.root_token}
    d = str(repo)
    denied = cli("apply", "--dir", d, "--auto-approve", extra={"VAULT_TOKEN": wrong_token}, expect=1)
    assert "kms-access-denied" in denied.stdout + denied.stderr, denied.stdout + denied.stderr
    cli("rotate", "vault-rsa", "--dir", d, "--format", "json", extra={"BAO_TOKEN": wrong_token}, expect=1)
    # (The failures back the names off; `rotate` tries again at once.)
    cli("rotate", "vault-rsa", "--dir", d, "--format", "json", extra=token)
    cli("rotate", "vault-ec", "--dir", d, extra=token)
    cli("plan", "--dir", d, "--out", str(scratch / "plan.json"), "--format", "json", extra=token, expect=(0, 2))
    cli("apply", str(scratch / "plan.json"), "--dir", d, "--auto-approve", extra=token)
    cli("rotate", "vault-ec", "--dir", d, "--reason", "canary", extra=token)
    cli.many(
        ("plan", "--dir", d, "--refresh", "--format", "markdown", 0),
        ("status", "--dir", d, "--format", "json", 0),
        ("audit", "--dir", d, "--format", "json", 0),
        ("audit", "verify", "--dir", d, 0),
    )
    cli("kms", "rewrap", "--dir", d, extra=token)
    # The same transit key through AppRole: a wrong secret id, then the right one.
    doc["kms"]["vault"]["auth"] = "approle"
    (repo / "certificates.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    wrong_secret_id = str(uuid.uuid4())
    approle = {"VAULT_ROLE_ID": bao_transit.role_id, "VAULT_SECRET_ID": bao_transit.secret_id}
    refused = cli("rotate", "vault-ec", "--dir", d, extra={**approle, "VAULT_SECRET_ID": wrong_secret_id}, expect=1)
    assert "kms-access-denied" in refused.stdout + refused.stderr, refused.stdout + refused.stderr
    cli("rotate", "vault-ec", "--dir", d, "--format", "json", "--reason", "approle", extra=approle)

    scan = CanaryScan([])
    scan.add(secret_canary("Vault token", bao_transit.root_token))
    scan.add(secret_canary("wrong Vault token", wrong_token))
    scan.add(secret_canary("AppRole secret id", bao_transit.secret_id))
    scan.add(secret_canary("wrong AppRole secret id", wrong_secret_id))
    vault = VaultKms(url=bao_transit.url, key=bao_transit.key, mount=bao_transit.mount, env=token)
    opened = seed_stored_keys(scan, database_url, [vault])
    assert opened.get("Certificate", 0) >= 4 and opened.get("LocalCa") == 1, opened
    scan_database(scan, database_url)
    log = pg_server_log.read_bytes()[log_start:]
    assert b"parameters:" in log
    scan.scan("postgres-log", str(pg_server_log), log)
    cli.scan_outputs(scan)
    deployed: list[Path] = []
    scan_files(scan, tmp_path, skip={debug}, key_files=deployed)
    assert {p.parent.name for p in deployed} == {"vault-ec", "vault-rsa"}
    report(scan, "test server, Vault transit KMS")
