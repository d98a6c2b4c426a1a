"""End to end: a fleet of three hosts, each an nginx and a real agent process, and an applier elsewhere.

The applier (``certreconcile apply``, ``rotate``, ``plan``, ``status``...) runs in its own process and
folder; as root it runs in a private mount namespace where the hosts' directory is an empty tmpfs
(tests/fleet_hosts.py), so every byte a host serves went through an agent over mutual TLS.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from certreconcile.domain.certs import read_cert_facts
from certreconcile.plugins.targets.handshake import observe_served
from e2e.conftest import Runner
from engine import cert, desired_doc, write_desired
from fleet_hosts import FleetHost, applier_command, can_isolate, enrol, start_hosts
from handshake_loop import HandshakeLoop
from web_servers import write_initial_files

NAMES = ("web-1", "web-2", "web-3")
CERTIFICATES = {"shop": ["shop.example.com"], "api": ["api.example.com"]}
TARGETS = [f"{name}/edge" for name in NAMES]


@pytest.fixture
def hosts_dir(tmp_path: Path) -> Path:
    return tmp_path / "hosts"


@pytest.fixture
def applier(cli_env: dict[str, str], tmp_path: Path, hosts_dir: Path) -> Runner:
    """The ``certreconcile`` command in the applier's own folder, unable to see the hosts' directory."""
    if not can_isolate() and cli_env.get("CI"):
        pytest.fail("CI runs as root: the applier must run in a mount namespace without the hosts' directory")
    folder = tmp_path / "applier"
    folder.mkdir()

    def run(*args: str, check_code: int | None = None, env: dict[str, str] | None = None) -> (
        subprocess.CompletedProcess[str]
    ):
        argv = applier_command(hosts_dir, [sys.executable, "-m", "certreconcile", *args])
        result = subprocess.run(argv, capture_output=True, text=True, env=env or cli_env, cwd=folder, timeout=300,
                                check=False)  # fmt: skip
        if check_code is not None:
            assert result.returncode == check_code, (result.returncode, result.stdout, result.stderr)
        return result

    return run


@pytest.fixture
def fleet(
    applier: Runner, cli_env: dict[str, str], tmp_path: Path, hosts_dir: Path
) -> Iterator[tuple[list[FleetHost], Path]]:
    """Three enrolled hosts with their agents running, and the applier's desired state naming them."""
    with start_hosts(hosts_dir, NAMES, CERTIFICATES) as hosts:
        agents = {host.name: {"url": host.url, "timeout": "60s"} for host in hosts}
        doc = desired_doc([cert(name, *domains, targets=TARGETS) for name, domains in CERTIFICATES.items()],
                          targets={})  # fmt: skip
        doc["agents"] = agents
        desired = write_desired(tmp_path / "applier" / "desired", doc)
        for host in hosts:
            enrol(host, tmp_path / "applier", applier, desired, cli_env)
            host.start()
        yield hosts, desired


def _status(applier: Runner, desired: Path) -> dict[str, object]:
    document: dict[str, object] = json.loads(applier("status", "--dir", str(desired), "--format", "json",
                                                     check_code=0).stdout)  # fmt: skip
    return document


def _fingerprints(applier: Runner, desired: Path) -> dict[str, str]:
    rows = _status(applier, desired)["certificates"]
    assert isinstance(rows, list)
    return {row["name"]: row["fingerprint"] for row in rows}


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _served(host: FleetHost, name: str) -> str | None:
    """What ``host`` serves for ``name`` once its nginx's old worker, if a reload left one, is gone.

    A reloaded nginx's old worker may answer a few more handshakes while it drains (the agent's
    verification sees the new worker; our handshake can still land on the old one): without this
    wait the drift check below could see the old certificate after a verified apply, and the agent
    asked right after the drift could see the certificate the drift replaced.
    """
    host.nginx.drained()
    return observe_served(host.nginx.address, tuple(CERTIFICATES[name])).fingerprint


def test_the_applier_cannot_see_the_hosts(applier: Runner, hosts_dir: Path) -> None:
    """Positive control of the isolation the other tests rely on."""
    (hosts_dir / "web-9").mkdir(parents=True)
    (hosts_dir / "web-9" / "secret").write_text("host only")
    seen = subprocess.run(applier_command(hosts_dir, ["ls", "-A", str(hosts_dir)]), capture_output=True, text=True,
                          check=True).stdout  # fmt: skip
    assert seen.strip() == ("" if can_isolate() else "web-9")


def test_one_apply_serves_two_certificates_on_three_hosts_and_rotates_without_a_failed_handshake(
    applier: Runner, fleet: tuple[list[FleetHost], Path]
) -> None:
    hosts, desired = fleet
    d = str(desired)
    applied = applier("apply", "--dir", d, "--auto-approve", check_code=0)
    assert "2 done, 0 skipped, 0 failed" in applied.stdout

    before = _fingerprints(applier, desired)
    for host in hosts:
        for name in CERTIFICATES:
            assert _served(host, name) == before[name], (host.name, name)
    status = _status(applier, desired)
    for row in status["certificates"]:  # type: ignore[union-attr]
        assert row["targets_verified"] == row["targets_total"] == 3, row
    assert {agent["name"]: agent["state"] for agent in status["agents"]} == dict.fromkeys(NAMES, "ok")  # type: ignore[union-attr]
    applier("plan", "--dir", d, "--refresh", "--detailed-exitcode", check_code=0)

    loops = [HandshakeLoop(host.nginx.address, "shop.example.com") for host in hosts]
    threads = [threading.Thread(target=loop.run, daemon=True) for loop in loops]
    for thread in threads:
        thread.start()
    try:
        for loop in loops:
            loop.wait_for(20)
        applier("rotate", "shop", "--dir", d, "--reason", "fleet-test", check_code=0)
        after = _fingerprints(applier, desired)["shop"]
        for loop in loops:
            loop.wait_for(len(loop.seen) + 20)
    finally:
        for loop in loops:
            loop.stop.set()
        for thread in threads:
            thread.join(timeout=10)

    assert after != before["shop"]
    for host, loop in zip(hosts, loops, strict=True):
        assert loop.errors == [], (host.name, loop.errors[:3])
        assert set(loop.seen) <= {before["shop"], after}, host.name
        assert loop.seen[-1] == after, host.name
        assert _served(host, "api") == before["api"]  # the other certificate untouched
    for row in _status(applier, desired)["certificates"]:  # type: ignore[union-attr]
        assert row["targets_verified"] == row["targets_total"] == 3, row

    # Drift on one host (someone put the old self-signed files back): plan --refresh asks the agent.
    web3 = hosts[2]
    write_initial_files(web3.nginx.cert_dir, web3.nginx.initial["shop"])
    os.kill(web3.nginx.master_pid, signal.SIGHUP)
    wait_until(lambda: _served(web3, "shop") == web3.nginx.initial["shop"].fingerprint)
    drift = applier("plan", "--dir", d, "--refresh", "--detailed-exitcode", check_code=2)
    assert "web-3/edge serves" in drift.stdout and "redistribute" in drift.stdout, drift.stdout
    repaired = applier("apply", "--dir", d, "--auto-approve", "--refresh", check_code=0)
    assert _served(web3, "shop") == after, (web3.nginx.initial["shop"].fingerprint, before, repaired.stdout)


def test_a_stopped_agent_leaves_the_rotation_open_until_it_is_back(
    applier: Runner, fleet: tuple[list[FleetHost], Path]
) -> None:
    hosts, desired = fleet
    d = str(desired)
    applier("apply", "--dir", d, "--auto-approve", check_code=0)
    old = _fingerprints(applier, desired)["api"]
    web2 = hosts[1]
    web2.stop()

    rotated = applier("rotate", "api", "--dir", d, "--reason", "fleet-test", check_code=1)
    output = rotated.stdout + rotated.stderr
    assert "web-2" in output and "agent-unreachable" in output, output
    new = _fingerprints(applier, desired)["api"]
    assert new != old
    assert _served(hosts[0], "api") == new and _served(hosts[2], "api") == new
    assert _served(web2, "api") == old  # nginx still serves the old one: nothing reached it

    pending = applier("plan", "--dir", d, "--detailed-exitcode", check_code=2)
    assert "redistribute" in pending.stdout and "web-2/edge" in pending.stdout, pending.stdout
    refreshed = applier("plan", "--dir", d, "--refresh", "--detailed-exitcode", check_code=2)
    assert "agent web-2 did not answer" in refreshed.stdout + refreshed.stderr, refreshed.stdout
    assert "drift" not in refreshed.stdout.lower(), refreshed.stdout
    status = _status(applier, desired)
    api = next(row for row in status["certificates"] if row["name"] == "api")  # type: ignore[union-attr]
    assert api["targets_verified"] == 2 and api["targets"]["web-2/edge"]["last_error"], api

    web2.start()
    applier("apply", "--dir", d, "--auto-approve", check_code=0)
    assert _served(web2, "api") == new
    applier("plan", "--dir", d, "--detailed-exitcode", check_code=0)
    events = json.loads(applier("audit", "--dir", d, "--format", "json", check_code=0).stdout)
    on_web2 = [e["action"] for e in events if e["name"] == "api" and e["detail"].get("target") == "web-2/edge"
               and e["detail"].get("fingerprint", new) == new]  # fmt: skip
    assert "failed" in on_web2 and "verified" in on_web2, on_web2
    assert on_web2.index("failed") < len(on_web2) - 1 - on_web2[::-1].index("verified")


def test_an_agent_certificate_is_renewed_through_the_channel_and_its_key_never_leaves_the_host(
    applier: Runner, cli_env: dict[str, str], tmp_path: Path, hosts_dir: Path
) -> None:
    twenty_one_days_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=21)
    with start_hosts(hosts_dir, ["web-1"], {"shop": ["shop.example.com"]}) as (host,):
        doc = desired_doc([cert("shop", "shop.example.com", targets=["web-1/edge"])], targets={})
        doc["agents"] = {"web-1": {"url": host.url}}
        desired = write_desired(tmp_path / "applier" / "desired", doc)
        d = str(desired)
        # Enrolled 21 days ago for 30 days: a third of its life is left, so its renewal is due now.
        back_then = {**cli_env, "CERTRECONCILE_TEST_NOW": twenty_one_days_ago.isoformat()}
        enrol(host, tmp_path / "applier", applier, desired, back_then)
        host.start()
        key_before = host.key_file.read_bytes()
        inode_before = host.key_file.stat().st_ino
        old_cert = read_cert_facts(host.cert_file.read_text())

        planned = applier("plan", "--dir", d, "--detailed-exitcode", check_code=2)
        assert "renew agent web-1" in planned.stdout, planned.stdout
        applied = applier("apply", "--dir", d, "--auto-approve", check_code=0)

        new_cert = read_cert_facts(host.cert_file.read_text())
        assert new_cert.fingerprint != old_cert.fingerprint
        assert new_cert.not_after > old_cert.not_after + datetime.timedelta(days=15)
        assert host.key_file.read_bytes() == key_before and host.key_file.stat().st_ino == inode_before
        agents = {a["name"]: a for a in _status(applier, desired)["agents"]}  # type: ignore[union-attr]
        assert agents["web-1"]["fingerprint"] == new_cert.fingerprint and agents["web-1"]["state"] == "ok"
        # The agent still answers (with its new certificate) and the plan is empty.
        applier("plan", "--dir", d, "--refresh", "--detailed-exitcode", check_code=0)
        # The key's bytes appear nowhere on the applier's side.
        body = "".join(key_before.decode().strip().splitlines()[1:-1])
        audit = applier("audit", "--dir", d, "--format", "json", check_code=0).stdout
        for text in (applied.stdout, applied.stderr, audit):
            assert body[:40] not in text.replace("\n", "")
        for path in (tmp_path / "applier").rglob("*"):
            if path.is_file():
                assert body[:40].encode() not in path.read_bytes().replace(b"\n", b""), path
        assert "agent_renewed" in audit
