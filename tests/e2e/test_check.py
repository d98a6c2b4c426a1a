"""``certreconcile check`` against a real BIND9, a real Pebble (resolving through BIND) and a real nginx.

A correct declaration passes (``--order-staging`` too); a wrong TSIG secret, a zone the server does not
host, an HTTP-01 address that nothing answers on and a failing ``nginx -t`` each fail with their own
error; afterwards nothing is left in the zone or on disk, and the state database holds nothing.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from acme_servers import Pebble, start_pebble
from dns_servers import BindServer
from e2e.conftest import Runner
from kms_servers import free_port
from web_servers import Nginx

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def check_pebble(tmp_path_factory: pytest.TempPathFactory, bind_server: BindServer) -> Iterator[Pebble]:
    with start_pebble(tmp_path_factory.mktemp("pebble-check"), bind_server.host_port) as server:
        yield server


def _doc(pebble: Pebble, bind: BindServer, nginx: Nginx, certificates: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kms": {"local": {}},
        "issuers": {
            "pebble": {
                "acme": {
                    "directory": pebble.directory_url,
                    "ca_bundle": str(pebble.ca_bundle),
                    "order_timeout": "60s",
                    "http01": {"standalone": {"listen": f"127.0.0.1:{pebble.http01_port}"}},
                }
            }
        },
        "dns_providers": {
            "corp-dns": {
                "rfc2136": {
                    "server": bind.host_port,
                    "tsig_key_name": bind.tsig_key_name,
                    "tsig_secret_env": "CORP_TSIG_SECRET",
                },
                "nameservers": [bind.host_port],
                "propagation_timeout": "20s",
            }
        },
        "targets": {
            "web": {"nginx": {"cert_dir": str(nginx.cert_dir), "test_command": nginx.test_command}},
            "deploy": {"files": {"dir": "out"}},
        },
        "certificates": certificates,
    }


def _certificates(zone: str) -> list[dict[str, Any]]:
    return [
        {"name": "app", "domains": [f"app.{zone}", f"*.app.{zone}"], "issuer": "pebble", "challenge": "dns-01",
         "dns_provider": "corp-dns", "targets": ["web"]},
        {"name": "www", "domains": [f"www.{zone}"], "issuer": "pebble", "targets": ["deploy"]},
    ]  # fmt: skip


def _files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.fixture
def setup(
    check_pebble: Pebble,
    bind_server: BindServer,
    nginx_server: Callable[..., Nginx],
    cli_env: dict[str, str],
    tmp_path: Path,
) -> Callable[..., tuple[Path, dict[str, str], Nginx]]:
    def make(certificates: list[dict[str, Any]] | None = None) -> tuple[Path, dict[str, str], Nginx]:
        nginx = nginx_server({"app": [f"app.{bind_server.zone}"]})
        desired = tmp_path / "repo"
        desired.mkdir(exist_ok=True)
        doc = _doc(check_pebble, bind_server, nginx, certificates or _certificates(bind_server.zone))
        (desired / "certificates.yaml").write_text(yaml.safe_dump(doc))
        return desired, {**cli_env, "CORP_TSIG_SECRET": bind_server.tsig_secret}, nginx

    return make


def _check(run_cli: Runner, desired: Path, env: dict[str, str], *args: str, code: int) -> dict[str, Any]:
    result = run_cli("check", "--dir", str(desired), "--format", "json", *args, env=env)
    assert result.returncode == code, result.stdout[-3000:] + result.stderr
    assert env["CORP_TSIG_SECRET"] not in result.stdout + result.stderr
    return dict(json.loads(result.stdout))


def _failures(report: dict[str, Any]) -> dict[tuple[str, str], tuple[str, str]]:
    results = report["results"]
    return {(r["subject"], r["check"]): (r["code"], r["message"]) for r in results if r["outcome"] == "failed"}


def _assert_nothing_left(bind: BindServer, desired: Path, nginx: Nginx, before: set[str], database_url: str) -> None:
    for name in ("app", "www", "elsewhere"):
        assert bind.txt_values(f"_acme-challenge.{name}.{bind.zone}") == set()
    assert _files(desired) == before  # no out/, no .certreconcile/
    assert _files(nginx.cert_dir) == {"app", *(f"app/{f}" for f in ("privkey.pem", "cert.pem", "chain.pem",
                                                                  "fullchain.pem"))}  # fmt: skip
    with psycopg.connect(database_url) as connection:  # check does not open the state: no row anywhere
        for table in ("Certificate", "CertAudit", "AcmeAccount", "AcmeOrder", "ApplyRun"):
            assert connection.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,), table


def test_a_correct_declaration_passes_and_leaves_nothing(
    setup: Callable[..., tuple[Path, dict[str, str], Nginx]],
    check_pebble: Pebble,
    bind_server: BindServer,
    run_cli: Runner,
    database_url: str,
) -> None:
    desired, env, nginx = setup()
    before = _files(desired)
    base = f"http://127.0.0.1:{check_pebble.http01_port}"
    report = _check(run_cli, desired, env, "--http01-base-url", base, "--order-staging", code=0)
    assert report["ok"] is True
    outcomes = {(r["subject"], r["check"]): r["outcome"] for r in report["results"]}
    assert outcomes == {
        ("kms local", "credentials"): "ok",  # (the key file does not exist yet: not created by a check)
        ("issuer pebble", "reachable"): "ok",
        ("dns_provider corp-dns", "credentials"): "ok",
        ("target deploy", "test command"): "ok",
        ("target web", "test command"): "ok",
        ("certificate app", "dns-01"): "ok",
        ("certificate app", "staging order"): "ok",
        ("certificate www", f"http-01 www.{bind_server.zone}"): "ok",
        ("certificate www", "staging order"): "ok",
    }
    assert not Path(env["CERTRECONCILE_LOCAL_KMS_KEY_FILE"]).exists()
    _assert_nothing_left(bind_server, desired, nginx, before, env["CERTRECONCILE_DATABASE_URL"])
    text = run_cli("check", "--dir", str(desired), "--http01-base-url", base, "app", env=env, check_code=0).stdout
    assert "certificate app" in text and "certificate www" not in text
    assert "check: 5 passed, 0 failed" in text


def test_a_wrong_tsig_secret_fails_with_its_own_error(
    setup: Callable[..., tuple[Path, dict[str, str], Nginx]], bind_server: BindServer, run_cli: Runner
) -> None:
    desired, env, nginx = setup()
    before = _files(desired)
    env = {**env, "CORP_TSIG_SECRET": base64.b64encode(secrets.token_bytes(32)).decode()}
    failures = _failures(_check(run_cli, desired, env, "app", code=1))
    assert set(failures) == {("dns_provider corp-dns", "credentials"), ("certificate app", "dns-01")}
    for code, message in failures.values():
        assert code == "dns-auth-failed"
        assert "refused the TSIG key certreconcile-test" in message
    _assert_nothing_left(bind_server, desired, nginx, before, env["CERTRECONCILE_DATABASE_URL"])


@pytest.mark.parametrize(
    ("follow_cname", "code", "says"),
    [
        # the default: the chain of _acme-challenge is followed first, through the declared servers
        (True, "dns-cname-lookup-failed", "could not follow the CNAME of _acme-challenge.app.not-hosted.example: "),
        (False, "dns-zone-not-found", "is authoritative for no zone holding _acme-challenge.app.not-hosted.example"),
    ],
)
def test_a_zone_the_server_does_not_host_fails_with_its_own_error(
    setup: Callable[..., tuple[Path, dict[str, str], Nginx]],
    bind_server: BindServer,
    run_cli: Runner,
    follow_cname: bool,
    code: str,
    says: str,
) -> None:
    certificates = [{"name": "elsewhere", "domains": ["app.not-hosted.example"], "issuer": "pebble",
                     "challenge": "dns-01", "dns_provider": "corp-dns"}]  # fmt: skip
    desired, env, nginx = setup(certificates)
    doc = yaml.safe_load((desired / "certificates.yaml").read_text())
    doc["dns_providers"]["corp-dns"]["follow_cname"] = follow_cname
    (desired / "certificates.yaml").write_text(yaml.safe_dump(doc))
    before = _files(desired)
    failures = _failures(_check(run_cli, desired, env, code=1))
    assert list(failures) == [("certificate elsewhere", "dns-01")]
    assert failures[("certificate elsewhere", "dns-01")][0] == code
    assert says in failures[("certificate elsewhere", "dns-01")][1]
    _assert_nothing_left(bind_server, desired, nginx, before, env["CERTRECONCILE_DATABASE_URL"])


def test_an_http01_address_nothing_answers_on_fails_with_its_own_error(
    setup: Callable[..., tuple[Path, dict[str, str], Nginx]], bind_server: BindServer, run_cli: Runner
) -> None:
    desired, env, nginx = setup()
    before = _files(desired)
    unreached = f"http://127.0.0.1:{free_port()}"  # the solver listens elsewhere: nothing forwards here
    result = run_cli("check", "--dir", str(desired), "--http01-base-url", unreached, "www", env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"http-01 www.{bind_server.zone}" in result.stdout
    assert "error[check-http01-unreachable]: nothing answered at " + unreached in result.stdout
    assert "check: 3 passed, 1 failed" in result.stdout  # the KMS, the issuer and the files target still pass
    _assert_nothing_left(bind_server, desired, nginx, before, env["CERTRECONCILE_DATABASE_URL"])


def test_a_failing_nginx_test_fails_with_its_own_error(
    setup: Callable[..., tuple[Path, dict[str, str], Nginx]], bind_server: BindServer, run_cli: Runner
) -> None:
    desired, env, nginx = setup()
    before = _files(desired)
    nginx.config.write_text(nginx.config.read_text() + "\nno_such_directive on;\n")
    failures = _failures(_check(run_cli, desired, env, "app", code=1))
    assert list(failures) == [("target web", "test command")]
    code, message = failures[("target web", "test command")]
    assert code == "target-config-test-failed"
    assert "no_such_directive" in message
    _assert_nothing_left(bind_server, desired, nginx, before, env["CERTRECONCILE_DATABASE_URL"])


def test_an_undeclared_name_is_a_usage_error(
    setup: Callable[..., tuple[Path, dict[str, str], Nginx]], run_cli: Runner
) -> None:
    desired, env, _ = setup()
    result = run_cli("check", "--dir", str(desired), "nope", env=env)
    assert result.returncode == 1
    assert "error[name-unknown]: not declared: nope" in result.stderr
    assert os.listdir(desired) == ["certificates.yaml"]


def test_http01_through_a_webroot_leaves_no_directory_behind(
    setup: Callable[..., tuple[Path, dict[str, str], Nginx]], bind_server: BindServer, run_cli: Runner, tmp_path: Path
) -> None:
    desired, env, _ = setup()
    root = tmp_path / "www"
    root.mkdir()
    doc = yaml.safe_load((desired / "certificates.yaml").read_text())
    doc["issuers"]["pebble"]["acme"]["http01"] = {"webroot": {"path": str(root)}}
    (desired / "certificates.yaml").write_text(yaml.safe_dump(doc))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        result = run_cli("check", "--dir", str(desired), "--http01-base-url", base, "www", env=env)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"served a test token, fetched it from {base}, removed" in result.stdout
    assert list(root.iterdir()) == []  # no .well-known/acme-challenge left
