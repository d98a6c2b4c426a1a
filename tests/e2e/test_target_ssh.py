"""End to end: ``certreconcile apply`` with a local CA and an ``ssh`` target declared in YAML.

The target writes over SFTP to a real sshd on 127.0.0.1 (tests/ssh_server.py), runs its remote
reload command (SIGHUP to an nginx serving that directory) and is verified by TLS handshake.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

from certreconcile.domain.certs import read_cert_facts
from certreconcile.plugins.targets.handshake import observe_served
from e2e.conftest import Runner
from engine import cert, desired_doc, write_desired
from ssh_server import SshServer, keygen
from web_servers import Nginx


def _ssh_targets(server: SshServer, remote: Path, known_hosts: Path, nginx: Nginx) -> dict[str, object]:
    return {
        "web-1": {
            "ssh": {
                "host": server.host,
                "port": server.port,
                "user": server.user,
                "known_hosts": str(known_hosts),
                "key_file": str(server.client_key),
                "dir": str(remote),
                "reload_command": f"/bin/kill -HUP {nginx.master_pid}",
            },
            "verify": nginx.address,
            "verify_timeout": "20s",
        }
    }


def test_apply_issues_and_deploys_over_ssh(
    run_cli: Runner,
    cli_env: dict[str, str],
    tmp_path: Path,
    ssh_server: SshServer,
    nginx_server: Callable[..., Nginx],
) -> None:
    remote = tmp_path / "remote"
    nginx = nginx_server({"shop": ["shop.example.com"]}, cert_dir=remote)
    targets = _ssh_targets(ssh_server, remote, ssh_server.known_hosts, nginx)
    directory = write_desired(tmp_path / "desired", desired_doc([cert("shop", targets=["web-1"])], targets=targets))
    d = str(directory)

    run_cli("validate", "--dir", d, check_code=0)
    applied = run_cli("apply", "--dir", d, "--auto-approve", check_code=0)
    assert "1 done, 0 skipped, 0 failed" in applied.stdout

    fullchain = (remote / "shop" / "fullchain.pem").read_text()
    fingerprint = read_cert_facts(fullchain).fingerprint
    nginx.drained()
    assert observe_served(nginx.address, ("shop.example.com",)).fingerprint == fingerprint
    assert stat.S_IMODE((remote / "shop" / "privkey.pem").stat().st_mode) == 0o600
    events = json.loads(run_cli("audit", "--dir", d, "--format", "json", check_code=0).stdout)
    verified = [e for e in events if e["action"] == "verified" and e["detail"].get("target") == "web-1"]
    assert verified and verified[0]["detail"]["fingerprint"] == fingerprint
    run_cli("plan", "--dir", d, "--refresh", "--detailed-exitcode", check_code=0)


def test_apply_refuses_a_host_whose_key_changed(
    run_cli: Runner,
    tmp_path: Path,
    ssh_server: SshServer,
    nginx_server: Callable[..., Nginx],
) -> None:
    remote = tmp_path / "remote"
    nginx = nginx_server({"shop": ["shop.example.com"]}, cert_dir=remote)
    before = {path: path.read_bytes() for path in (remote / "shop").iterdir()}
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(ssh_server.known_hosts_line(keygen(tmp_path / "impostor")))
    targets = _ssh_targets(ssh_server, remote, known_hosts, nginx)
    directory = write_desired(tmp_path / "desired", desired_doc([cert("shop", targets=["web-1"])], targets=targets))

    applied = run_cli("apply", "--dir", str(directory), "--auto-approve", check_code=1)

    assert "target-ssh-host-key-changed" in applied.stdout + applied.stderr
    assert {path: path.read_bytes() for path in (remote / "shop").iterdir()} == before  # nothing written
    assert observe_served(nginx.address, ("shop.example.com",)).fingerprint == nginx.initial["shop"].fingerprint
