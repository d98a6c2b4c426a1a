"""``certreconcile agent`` as a separate process, over real mutual TLS, deploying into a files target and a real nginx.

One agent process (module-scoped) serves a ``files`` target and an ``nginx`` target (a real nginx,
tests/web_servers.py). Every deployment ends with proof: nginx by a TLS handshake, the files target
by reading the files back. Every refusal answers a registered code and leaves the target directories
exactly as they were (paths, inodes, modification times). The agent's renewal keeps its key file
untouched; its environment holds no database or KMS setting, and it refuses to start with one.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certreconcile.agent.environment import FORBIDDEN_VARIABLES
from certreconcile.domain.certs import read_cert_facts
from certreconcile.fleet.protocol import (
    MAX_BODY_BYTES,
    CertificateRequest,
    CsrRequest,
    DeployRequest,
    HelloRequest,
    ObserveRequest,
    encode_request,
)
from certreconcile.plugins.ports import DeployBundle
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.testing.target_contract import self_signed_bundle
from fleet_support import (
    AgentProcess,
    TestFleet,
    agent_command,
    agent_env,
    request,
    run_agent,
    write_agent_dir,
)
from web_servers import Nginx, run_nginx

pytestmark = pytest.mark.integration

SHOP_DOMAINS = ("shop.example.test",)


@dataclasses.dataclass(frozen=True)
class Fleet1:
    agent: AgentProcess
    fleet: TestFleet
    files_dir: Path
    nginx: Nginx


@pytest.fixture(scope="module")
def web1(tmp_path_factory: pytest.TempPathFactory, test_fleet: TestFleet) -> Iterator[Fleet1]:
    base = tmp_path_factory.mktemp("agent-web-1")
    with run_nginx(base / "nginx", {"shop": list(SHOP_DOMAINS)}) as nginx:
        nginx_config = {
            "cert_dir": str(nginx.cert_dir),
            "pid_file": str(nginx.pid_file),
            "test_command": nginx.test_command,
        }
        targets = {
            "site-files": {"files": {"dir": "out"}},
            "failing-files": {"files": {"dir": "failing", "reload_command": "false"}},
            "edge-nginx": {"nginx": nginx_config, "verify": nginx.address, "verify_timeout": "20s"},
        }
        agent_dir = write_agent_dir(base / "web-1", test_fleet, "web-1", targets)
        # The applier's settings in the launching environment: the agent's process must not receive them.
        launcher = {**os.environ, "CERTRECONCILE_DATABASE_URL": "postgresql://db/canary", "VAULT_TOKEN": "s.canary"}
        with run_agent(agent_dir, test_fleet, env=agent_env(base=launcher)) as agent:
            yield Fleet1(agent, test_fleet, agent_dir.directory / "out", nginx)


def _deploy(bundle: DeployBundle, target: str = "site-files", **changes: Any) -> DeployRequest:
    fields: dict[str, Any] = {
        "target": target,
        "name": bundle.name,
        "domains": bundle.domains,
        "cert_pem": bundle.cert_pem,
        "chain_pem": bundle.chain_pem,
        "key_pem": bundle.key_pem.reveal().decode(),
        "fingerprint": bundle.fingerprint,
    }
    fields.update(changes)
    return request(DeployRequest, **fields)


def _tree(*roots: Path) -> dict[str, tuple[int, int, int]]:
    """Every path below ``roots``: (inode, mtime in ns, size): a refusal must change none of them."""
    found: dict[str, tuple[int, int, int]] = {}
    for root in roots:
        for path in sorted(root.rglob("*")) if root.exists() else ():
            info = path.lstat()
            found[str(path)] = (info.st_ino, info.st_mtime_ns, info.st_size)
    return found


# ---------------------------------------------------------------- deployments


def test_hello_names_the_agent_its_targets_and_its_certificate(web1: Fleet1) -> None:
    answer = web1.agent.client(web1.fleet).call(request(HelloRequest))
    assert answer.status == 200, answer
    assert answer.data["name"] == "web-1"
    assert answer.data["targets"] == ["edge-nginx", "failing-files", "site-files"]
    served = read_cert_facts(web1.agent.agent.cert_file.read_text())
    assert answer.data["cert_fingerprint"] == served.fingerprint
    assert answer.peer_uris == ("spiffe://certreconcile/agent/web-1",)


def test_deploy_to_a_files_target_then_again_changes_nothing(web1: Fleet1) -> None:
    client = web1.agent.client(web1.fleet)
    bundle = self_signed_bundle("blog", ("blog.example.test",))
    first = client.call(_deploy(bundle))
    assert first.status == 200, first
    assert first.data | {"attempts": 0} == {
        "target": "site-files", "name": "blog", "fingerprint": bundle.fingerprint, "verified": True,
        "changed": True, "attempts": 0, "error": None,
    }  # fmt: skip
    folder = web1.files_dir / "blog"
    assert (folder / "privkey.pem").read_bytes() == bundle.key_pem.reveal()
    assert (folder / "privkey.pem").stat().st_mode & 0o777 == 0o600
    assert read_cert_facts((folder / "fullchain.pem").read_text()).fingerprint == bundle.fingerprint
    before = _tree(folder)
    second = client.call(_deploy(bundle))  # the same bundle, a new request (new nonce)
    assert second.status == 200, second
    assert (second.data["changed"], second.data["verified"]) == (False, True)
    assert _tree(folder) == before  # not rewritten: same inodes and times


def test_deploy_to_a_real_nginx_is_proven_by_handshake(web1: Fleet1) -> None:
    client = web1.agent.client(web1.fleet)
    bundle = self_signed_bundle("shop", SHOP_DOMAINS)
    assert observe_served(web1.nginx.address, SHOP_DOMAINS).fingerprint != bundle.fingerprint
    answer = client.call(_deploy(bundle, target="edge-nginx"))
    assert answer.status == 200, answer
    assert (answer.data["verified"], answer.data["changed"], answer.data["fingerprint"]) == (
        True,
        True,
        bundle.fingerprint,
    )
    # Our own handshake. nginx's old worker may still answer a few handshakes while it drains (the
    # nginx target's own tests wait the same way): once it is gone, only the new certificate is served.
    web1.nginx.drained()
    assert observe_served(web1.nginx.address, SHOP_DOMAINS).fingerprint == bundle.fingerprint
    seen = client.call(request(ObserveRequest, target="edge-nginx", name="shop", domains=SHOP_DOMAINS))
    assert (seen.status, seen.data["fingerprint"]) == (200, bundle.fingerprint)
    again = client.call(_deploy(bundle, target="edge-nginx"))
    assert (again.data["changed"], again.data["verified"]) == (False, True)


def test_a_failing_target_answers_unverified_with_its_error(web1: Fleet1) -> None:
    bundle = self_signed_bundle("fails", ("fails.example.test",))
    answer = web1.agent.client(web1.fleet).call(_deploy(bundle, target="failing-files"))
    assert answer.status == 200, answer
    assert (answer.data["verified"], answer.data["changed"], answer.data["fingerprint"]) == (False, True, None)
    assert answer.data["error"].startswith("error[target-reload-failed]: target failing-files: reload command exited 1")


# ---------------------------------------------------------------- refusals: nothing written


def _refused_without_writing(web1: Fleet1, send: Any, status: int, code: str) -> dict[str, Any]:
    before = _tree(web1.files_dir, web1.nginx.cert_dir)
    answer = send()
    assert (answer.status, answer.code) == (status, code), answer
    assert "\n" not in answer.data["error"]["message"]
    assert _tree(web1.files_dir, web1.nginx.cert_dir) == before
    return dict(answer.data["error"])


def test_a_client_certificate_from_another_ca_fails_the_handshake(web1: Fleet1) -> None:
    before = _tree(web1.files_dir)
    client = web1.agent.client(web1.fleet, web1.fleet.applier_other_ca)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        client.call(_deploy(self_signed_bundle("intruder", ("intruder.example.test",))))
    assert _tree(web1.files_dir) == before
    assert not (web1.files_dir / "intruder").exists()


def test_a_client_without_the_applier_san_is_refused(web1: Fleet1) -> None:
    client = web1.agent.client(web1.fleet, web1.fleet.without_san)
    bundle = self_signed_bundle("intruder", ("intruder.example.test",))
    _refused_without_writing(web1, lambda: client.call(_deploy(bundle)), 403, "agent-client-refused")


def test_a_replayed_request_is_refused(web1: Fleet1) -> None:
    client = web1.agent.client(web1.fleet)
    old, new = (self_signed_bundle("replay", ("replay.example.test",)) for _ in range(2))
    captured = encode_request(_deploy(old))
    assert client.post("deploy", captured).status == 200
    assert client.call(_deploy(new)).data["fingerprint"] == new.fingerprint
    # Sent again, the captured request would put the old certificate back: refused, nothing written.
    _refused_without_writing(web1, lambda: client.post("deploy", captured), 409, "agent-request-replayed")
    assert read_cert_facts((web1.files_dir / "replay" / "cert.pem").read_text()).fingerprint == new.fingerprint
    # A nonce is used once whatever the body: a hello's nonce does not open a deploy.
    hello = request(HelloRequest)
    assert client.call(hello).status == 200
    reused = _deploy(old).model_copy(update={"nonce": hello.nonce})
    _refused_without_writing(web1, lambda: client.call(reused), 409, "agent-request-replayed")


@pytest.mark.parametrize("offset", [-10, 10], ids=["stale", "future"])
def test_a_request_outside_the_window_is_refused(web1: Fleet1, offset: int) -> None:
    client = web1.agent.client(web1.fleet)
    moment = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=offset)
    bundle = self_signed_bundle("late", ("late.example.test",))
    message = _deploy(bundle).model_copy(update={"timestamp": moment})
    error = _refused_without_writing(web1, lambda: client.call(message), 400, "agent-request-stale")
    assert ("behind" if offset < 0 else "ahead of") in error["message"]
    assert "window is 5m" in error["message"]


def test_a_target_not_in_the_local_configuration_is_refused(web1: Fleet1) -> None:
    client = web1.agent.client(web1.fleet)
    bundle = self_signed_bundle("shop", SHOP_DOMAINS)
    error = _refused_without_writing(
        web1, lambda: client.call(_deploy(bundle, target="etc-passwd")), 404, "agent-target-unknown"
    )
    assert "declared: edge-nginx, failing-files, site-files" in error["message"]


@pytest.mark.parametrize(
    "extra",
    [{"path": "/etc/ssl/evil"}, {"cert_dir": "/tmp"}, {"reload_command": "rm -rf /"}],
    ids=lambda e: next(iter(e)),
)
def test_a_request_carrying_a_path_or_an_unknown_field_is_refused(web1: Fleet1, extra: dict[str, str]) -> None:
    client = web1.agent.client(web1.fleet)
    body = json.loads(encode_request(_deploy(self_signed_bundle("shop", SHOP_DOMAINS))))
    body.update(extra)
    error = _refused_without_writing(
        web1, lambda: client.post("deploy", json.dumps(body).encode()), 400, "agent-request-invalid"
    )
    assert f"`{next(iter(extra))}` is not a field of a deploy request" in error["message"]


@pytest.mark.parametrize("name", ["../../etc", "shop/../../x", "..", "/etc/passwd"])
def test_a_certificate_name_cannot_climb_out(web1: Fleet1, name: str) -> None:
    client = web1.agent.client(web1.fleet)
    body = json.loads(encode_request(_deploy(self_signed_bundle("shop", SHOP_DOMAINS))))
    body["name"] = name
    _refused_without_writing(
        web1, lambda: client.post("deploy", json.dumps(body).encode()), 400, "agent-request-invalid"
    )


def test_a_bundle_whose_key_does_not_match_is_refused(web1: Fleet1) -> None:
    client = web1.agent.client(web1.fleet)
    bundle = self_signed_bundle("mixed", ("mixed.example.test",))
    other_key = self_signed_bundle("other", ("other.example.test",)).key_pem.reveal().decode()
    error = _refused_without_writing(
        web1, lambda: client.call(_deploy(bundle, key_pem=other_key)), 422, "agent-bundle-mismatch"
    )
    assert "PRIVATE" not in json.dumps(error)


def test_a_fingerprint_that_is_not_the_certificates_is_refused(web1: Fleet1) -> None:
    client = web1.agent.client(web1.fleet)
    bundle = self_signed_bundle("mixed", ("mixed.example.test",))
    _refused_without_writing(
        web1, lambda: client.call(_deploy(bundle, fingerprint="0" * 64)), 422, "agent-bundle-mismatch"
    )


def test_other_methods_paths_and_huge_bodies_are_refused(web1: Fleet1) -> None:
    client = web1.agent.client(web1.fleet)
    hello = encode_request(request(HelloRequest))
    assert client.post("hello", hello, method="GET").status == 405
    assert client.post("hello", hello, path="/v1/../etc").code == "agent-request-invalid"
    assert client.post("hello", hello, path="/v2/hello").status == 404
    big = client.post("hello", hello, headers={"Content-Length": str(MAX_BODY_BYTES + 1)})
    assert (big.status, big.code) == (413, "agent-request-invalid")


def test_the_log_has_one_line_per_request_and_never_a_key(web1: Fleet1) -> None:
    client = web1.agent.client(web1.fleet)
    bundle = self_signed_bundle("logged", ("logged.example.test",))
    assert client.call(_deploy(bundle)).status == 200
    log = web1.agent.log_text()
    assert "deploy target=site-files name=logged" in log
    assert "PRIVATE KEY" not in log
    key_lines = [line for line in bundle.key_pem.reveal().decode().splitlines() if len(line) > 16]
    assert not any(line in log for line in key_lines)


# ---------------------------------------------------------------- the agent's own certificate and environment


def test_renewal_through_the_channel_keeps_the_key_file_untouched(tmp_path: Path, test_fleet: TestFleet) -> None:
    agent_dir = write_agent_dir(tmp_path / "web-2", test_fleet, "web-2", {"site": {"files": {"dir": "out"}}})
    key_before = agent_dir.key_file.stat()
    key_bytes = agent_dir.key_file.read_bytes()
    with run_agent(agent_dir, test_fleet) as agent:
        client = agent.client(test_fleet)
        old = client.call(request(HelloRequest))
        csr_answer = client.call(request(CsrRequest))
        assert csr_answer.status == 200, csr_answer
        csr = x509.load_pem_x509_csr(csr_answer.data["csr_pem"].encode())
        own_key = serialization.load_pem_private_key(key_bytes, None)
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        assert csr.public_key().public_bytes(*spki) == own_key.public_key().public_bytes(*spki)
        # Refused: a certificate for another key, one from another CA.
        stranger = self_signed_bundle("x", ("x.example.test",))
        other_key = serialization.load_pem_private_key(stranger.key_pem.reveal(), None)
        wrong_key = test_fleet.ca.issue("web-2", other_key.public_key(), uris=["spiffe://certreconcile/agent/web-2"])
        refused = client.call(request(CertificateRequest, cert_pem=wrong_key, ca_pem=test_fleet.ca.pem))
        assert (refused.status, refused.code) == (422, "agent-name-mismatch")
        foreign = test_fleet.other_ca.sign_csr(csr_answer.data["csr_pem"])
        refused = client.call(request(CertificateRequest, cert_pem=foreign, ca_pem=test_fleet.ca.pem))
        assert (refused.status, refused.code) == (422, "agent-certificate-refused")
        renewed = test_fleet.ca.sign_csr(csr_answer.data["csr_pem"])
        answer = client.call(request(CertificateRequest, cert_pem=renewed, ca_pem=test_fleet.ca.pem))
        assert answer.status == 200, answer
        new_fingerprint = read_cert_facts(renewed).fingerprint
        assert answer.data["fingerprint"] == new_fingerprint != old.data["cert_fingerprint"]
        after = client.call(request(HelloRequest))  # a new connection: served with the new certificate
        assert read_cert_facts(x509.load_der_x509_certificate(after.peer_cert_der).public_bytes(
            serialization.Encoding.PEM)).fingerprint == new_fingerprint  # fmt: skip
        assert after.data["cert_fingerprint"] == new_fingerprint
    assert agent_dir.cert_file.read_text() == renewed
    assert agent_dir.cert_file.stat().st_mode & 0o777 == 0o644
    key_after = agent_dir.key_file.stat()
    assert agent_dir.key_file.read_bytes() == key_bytes
    assert (key_after.st_ino, key_after.st_mtime_ns, key_after.st_mode) == (
        key_before.st_ino, key_before.st_mtime_ns, key_before.st_mode)  # fmt: skip


def test_the_agent_process_holds_no_database_or_kms_setting(web1: Fleet1) -> None:
    raw = Path(f"/proc/{web1.agent.pid}/environ").read_bytes()
    names = {entry.split(b"=", 1)[0].decode() for entry in raw.split(b"\0") if entry}
    assert not names & set(FORBIDDEN_VARIABLES)
    assert not {name for name in names if "DATABASE" in name}
    assert b"canary" not in raw


@pytest.mark.parametrize("variable", ["CERTRECONCILE_DATABASE_URL", "VAULT_TOKEN", "PGPASSWORD"])
def test_the_agent_refuses_to_start_with_a_database_or_kms_setting(
    tmp_path: Path, test_fleet: TestFleet, variable: str
) -> None:
    agent_dir = write_agent_dir(tmp_path / "web-3", test_fleet, "web-3", {"site": {"files": {"dir": "out"}}})
    secret = "postgresql://certreconcile:hunter2-canary@db/certs"
    result = subprocess.run(
        agent_command(agent_dir.config), env=agent_env({variable: secret}), capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert (
        f"error[agent-environment-forbidden]: the agent's environment holds database or KMS settings: {variable}"
        in stderr
    )
    assert "hunter2-canary" not in stderr + result.stdout.decode()
    assert not (agent_dir.directory / "out").exists()


def test_a_database_url_in_agent_yaml_is_refused_at_its_position(tmp_path: Path, test_fleet: TestFleet) -> None:
    agent_dir = write_agent_dir(tmp_path / "web-4", test_fleet, "web-4", {"site": {"files": {"dir": "out"}}})
    text = agent_dir.config.read_text()
    agent_dir.config.write_text(text.replace("listen:", "database_url: postgresql://db/certs\nlisten:", 1))
    result = subprocess.run(
        agent_command(agent_dir.config), env=agent_env(), capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert f"{agent_dir.config}:2:1: error[agent-config-forbidden-setting]: `database_url`" in result.stderr.decode()


def test_agent_csr_makes_the_key_once_then_reuses_it(tmp_path: Path, test_fleet: TestFleet) -> None:
    agent_dir = write_agent_dir(
        tmp_path / "web-5", test_fleet, "web-5", {"site": {"files": {"dir": "out"}}}, enrol=False
    )
    command = agent_command(agent_dir.config, "csr")
    first = subprocess.run(command, env=agent_env(), capture_output=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    assert agent_dir.key_file.stat().st_mode & 0o777 == 0o600
    key_bytes, inode = agent_dir.key_file.read_bytes(), agent_dir.key_file.stat().st_ino
    out = tmp_path / "web-5.csr"
    second = subprocess.run(
        [*command, "--out", str(out)], env=agent_env(), capture_output=True, timeout=60, check=False
    )
    assert second.returncode == 0, second.stderr
    assert "reused the key" in second.stderr.decode()
    assert (agent_dir.key_file.read_bytes(), agent_dir.key_file.stat().st_ino) == (key_bytes, inode)
    csrs = [x509.load_pem_x509_csr(text) for text in (first.stdout, out.read_bytes())]
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert csrs[0].public_key().public_bytes(*spki) == csrs[1].public_key().public_bytes(*spki)
    uris = csrs[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://certreconcile/agent/web-5"]
    # Enrolled with the signed CSR, the agent starts and answers as web-5.
    agent_dir.cert_file.write_text(test_fleet.ca.sign_csr(out.read_text()))
    with run_agent(agent_dir, test_fleet) as agent:
        assert agent.client(test_fleet).call(request(HelloRequest)).data["name"] == "web-5"
    assert os.path.exists(agent_dir.key_file)


def _poll(check: Any, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_sighup_rereads_the_configuration_and_keeps_it_when_invalid(tmp_path: Path, test_fleet: TestFleet) -> None:
    agent_dir = write_agent_dir(tmp_path / "web-6", test_fleet, "web-6", {"site": {"files": {"dir": "out"}}})
    original = agent_dir.config.read_text()
    with run_agent(agent_dir, test_fleet) as agent:
        client = agent.client(test_fleet)
        agent_dir.config.write_text(original + "  more:\n    files: {dir: more}\n")
        agent.process.send_signal(signal.SIGHUP)
        assert _poll(lambda: client.call(request(HelloRequest)).data["targets"] == ["more", "site"])
        agent_dir.config.write_text(original.replace("listen:", "database_url: x\nlisten:"))
        agent.process.send_signal(signal.SIGHUP)
        assert _poll(lambda: "reload refused" in agent.log_text())
        assert "error[agent-config-forbidden-setting]" in agent.log_text()
        assert client.call(request(HelloRequest)).data["targets"] == ["more", "site"]  # still the previous one
        assert agent.stop() == 0  # SIGTERM: a graceful stop


def test_the_agent_judges_freshness_by_its_own_injected_clock(tmp_path: Path, test_fleet: TestFleet) -> None:
    """With CERTRECONCILE_TEST_NOW the agent's clock stands at 2030: a request stamped now is stale there."""
    agent_dir = write_agent_dir(tmp_path / "web-7", test_fleet, "web-7", {"site": {"files": {"dir": "out"}}})
    agent_now = datetime.datetime(2030, 1, 1, 12, 0, tzinfo=datetime.UTC)
    log = agent_dir.directory / "agent.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            agent_command(agent_dir.config),
            env=agent_env({"CERTRECONCILE_TEST_NOW": agent_now.isoformat()}),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    started = AgentProcess(agent_dir, process, log)
    try:
        client = started.client(test_fleet)
        assert _poll(lambda: _answers(client, request(HelloRequest, at=agent_now)))
        stale = client.call(request(HelloRequest))
        assert (stale.status, stale.code) == (400, "agent-request-stale")
        assert "2030-01-01T12:00:00+00:00" in stale.data["error"]["message"]
        assert client.call(request(HelloRequest, at=agent_now - datetime.timedelta(minutes=4))).status == 200
    finally:
        started.stop()


def _answers(client: Any, message: Any) -> bool:
    try:
        return bool(client.call(message).status == 200)
    except OSError:
        return False


def test_a_malformed_http_request_gets_an_error_body(web1: Fleet1) -> None:
    client = web1.agent.client(web1.fleet)
    answer = client.post("hello", b"{}", headers={"Content-Length": "x" * 70000})
    assert (answer.status, answer.code) == (431, "agent-request-invalid")


def _break_key_mode(agent_dir: Any, fleet: TestFleet) -> str:
    agent_dir.key_file.chmod(0o644)
    return "error[agent-tls-invalid]: the agent key"


def _certificate_of_another_agent(agent_dir: Any, fleet: TestFleet) -> str:
    key = serialization.load_pem_private_key(agent_dir.key_file.read_bytes(), None)
    agent_dir.cert_file.write_text(
        fleet.ca.issue("web-1", key.public_key(), uris=["spiffe://certreconcile/agent/web-1"])
    )
    return "error[agent-name-mismatch]:"


def _certificate_of_another_key(agent_dir: Any, fleet: TestFleet) -> str:
    other = serialization.load_pem_private_key(self_signed_bundle("x", ("x.test",)).key_pem.reveal(), None)
    agent_dir.cert_file.write_text(
        fleet.ca.issue("web-8", other.public_key(), uris=["spiffe://certreconcile/agent/web-8"])
    )
    return "error[agent-tls-invalid]:"


@pytest.mark.parametrize(
    "breakage", [_break_key_mode, _certificate_of_another_agent, _certificate_of_another_key], ids=lambda f: f.__name__
)
def test_the_agent_refuses_to_start_without_its_own_identity(
    tmp_path: Path, test_fleet: TestFleet, breakage: Any
) -> None:
    agent_dir = write_agent_dir(tmp_path / "web-8", test_fleet, "web-8", {"site": {"files": {"dir": "out"}}})
    expected = breakage(agent_dir, test_fleet)
    result = subprocess.run(
        agent_command(agent_dir.config), env=agent_env(), capture_output=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert expected in result.stderr.decode()


def test_the_agent_refuses_to_start_on_an_address_in_use(tmp_path: Path, test_fleet: TestFleet) -> None:
    agent_dir = write_agent_dir(tmp_path / "web-8", test_fleet, "web-8", {"site": {"files": {"dir": "out"}}})
    with socket.socket() as holder:
        holder.bind((agent_dir.host, agent_dir.port))
        holder.listen()
        result = subprocess.run(
            agent_command(agent_dir.config), env=agent_env(), capture_output=True, timeout=60, check=False
        )
    assert result.returncode == 1
    assert f"error[agent-listen-failed]: cannot listen on 127.0.0.1:{agent_dir.port}" in result.stderr.decode()


def test_the_agent_logs_one_json_object_per_line(tmp_path: Path, test_fleet: TestFleet) -> None:
    agent_dir = write_agent_dir(tmp_path / "web-8", test_fleet, "web-8", {"site": {"files": {"dir": "out"}}})
    env = agent_env({"CERTRECONCILE_LOG_FORMAT": "json", "CERTRECONCILE_LOG_LEVEL": "debug"})
    with run_agent(agent_dir, test_fleet, env=env) as agent:
        bundle = self_signed_bundle("jsonlog", ("jsonlog.example.test",))
        deployed = agent.client(test_fleet).call(request(DeployRequest, target="site", name=bundle.name,
                                                         domains=bundle.domains, cert_pem=bundle.cert_pem,
                                                         chain_pem=bundle.chain_pem,
                                                         key_pem=bundle.key_pem.reveal().decode(),
                                                         fingerprint=bundle.fingerprint))  # fmt: skip
        assert deployed.status == 200, deployed.data
        agent.stop()
        lines = [line for line in agent.log_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"timestamp", "level", "logger", "message"} <= record.keys() for record in records)
    assert any("deploy target=site name=jsonlog" in record["message"] for record in records), records
    assert "PRIVATE KEY" not in "\n".join(lines)
