"""The ssh target against a real OpenSSH sshd on 127.0.0.1 (tests/ssh_server.py), with a pinned host key.

The "remote" host is this machine: what the target writes over SFTP is checked on the local disk,
and an nginx (tests/web_servers.py) serving the remote directory proves, by TLS handshake, that the
remote reload command took effect.
"""

from __future__ import annotations

import itertools
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from certreconcile.errors import TargetError
from certreconcile.plugins.targets.safe_files import TEMP_PREFIX
from certreconcile.plugins.targets.ssh import SshTarget
from certreconcile.plugins.targets.ssh_config import SshTargetConfig
from certreconcile.testing import target_contract
from certreconcile.testing.target_contract import bundle_maker, self_signed_bundle, wait_for_fingerprint
from helpers import require_binary
from kms_servers import free_port
from ssh_server import SshServer, keygen
from web_servers import Nginx

pytestmark = pytest.mark.integration

_names = itertools.count()


def _settings(server: SshServer, remote_dir: Path) -> dict[str, Any]:
    return {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "known_hosts": str(server.known_hosts),
        "key_file": str(server.client_key),
        "dir": str(remote_dir),
    }


def _target(
    server: SshServer, remote_dir: Path, *, verify: str | None = None, env: dict[str, str] | None = None, **config: Any
) -> SshTarget:
    settings = {**_settings(server, remote_dir), **config}
    return SshTarget(
        "edge-ssh", SshTargetConfig(**settings), base_dir=remote_dir.parent, env=env or {}, verify=verify
    )


def _deploy_error(target: SshTarget, name: str = "shop") -> TargetError:
    with pytest.raises(TargetError) as caught:
        target.deploy(self_signed_bundle(name, (f"{name}.example.test",)))
    assert "\n" not in caught.value.one_line()
    return caught.value


def _files_under(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*") if not path.is_dir()) if root.exists() else []


# ---------------------------------------------------------------- the contract


@pytest.mark.parametrize("check", target_contract.CHECKS, ids=lambda check: check.__name__)
def test_ssh_passes_the_target_contract_by_read_back(ssh_server: SshServer, tmp_path: Path, check) -> None:  # type: ignore[no-untyped-def]
    name = f"shop{next(_names)}"
    check(lambda: _target(ssh_server, tmp_path / "remote"), bundle_maker(name, (f"{name}.example.test",)))


@pytest.mark.parametrize("check", target_contract.CHECKS, ids=lambda check: check.__name__)
def test_ssh_passes_the_target_contract_by_handshake(  # type: ignore[no-untyped-def]
    ssh_server: SshServer, nginx_server: Callable[..., Nginx], tmp_path: Path, check
) -> None:
    name = f"shop{next(_names)}"
    remote = tmp_path / "remote"
    nginx = nginx_server({name: [f"{name}.example.test"]}, cert_dir=remote)
    reload_command = f"/bin/kill -HUP {nginx.master_pid}"
    check(
        lambda: _target(ssh_server, remote, verify=nginx.address, reload_command=reload_command),
        bundle_maker(name, (f"{name}.example.test",)),
    )


def test_ssh_key_files_are_private(ssh_server: SshServer, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    target_contract.check_key_files_private(
        lambda: _target(ssh_server, remote), bundle_maker("shop", ("shop.example.test",)), remote
    )


def test_ssh_errors_hold_no_key(ssh_server: SshServer, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    target_contract.check_errors_hold_no_key(
        lambda: _target(ssh_server, blocker / "certs"), bundle_maker("shop", ("shop.example.test",))
    )


# ---------------------------------------------------------------- a deployment


def test_deploy_writes_the_files_and_reloads_nginx(
    ssh_server: SshServer, nginx_server: Callable[..., Nginx], tmp_path: Path
) -> None:
    remote = tmp_path / "remote"
    nginx = nginx_server({"shop": ["shop.example.test"]}, cert_dir=remote)
    stale = remote / "shop" / f"{TEMP_PREFIX}privkey.pem.{'0' * 16}"
    stale.write_text("left by a killed deployment")
    target = _target(ssh_server, remote, verify=nginx.address, reload_command=f"/bin/kill -HUP {nginx.master_pid}")
    bundle = self_signed_bundle("shop", ("shop.example.test",))

    target.deploy(bundle)

    folder = remote / "shop"
    assert sorted(p.name for p in folder.iterdir()) == ["cert.pem", "chain.pem", "fullchain.pem", "privkey.pem"]
    assert (folder / "privkey.pem").read_bytes() == bundle.key_pem.reveal()
    assert (folder / "fullchain.pem").read_text() == bundle.fullchain_pem
    assert (folder / "cert.pem").read_text() == bundle.cert_pem
    assert stat.S_IMODE((folder / "privkey.pem").stat().st_mode) == 0o600
    for public in ("cert.pem", "chain.pem", "fullchain.pem"):
        assert stat.S_IMODE((folder / public).stat().st_mode) == 0o644
    seen = wait_for_fingerprint(target, bundle)
    assert seen.fingerprint == bundle.fingerprint and seen.fingerprint != nginx.initial["shop"].fingerprint


def test_the_reload_command_reaches_no_shell(ssh_server: SshServer, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    marker_dir = tmp_path / "marks"
    marker_dir.mkdir()
    target = _target(ssh_server, remote, reload_command=f"touch '{marker_dir}/$HOME' {marker_dir}/b;touch")
    target.deploy(self_signed_bundle("shop", ("shop.example.test",)))
    assert sorted(p.name for p in marker_dir.iterdir()) == ["$HOME", "b;touch"]  # words, nothing expanded


def test_a_failing_reload_command_is_reported(ssh_server: SshServer, tmp_path: Path) -> None:
    target = _target(ssh_server, tmp_path / "remote", reload_command="ls /certreconcile-no-such-path")
    error = _deploy_error(target)
    assert error.code == "target-reload-failed"
    assert "exited 2" in error.message and "certreconcile-no-such-path" in error.message


# ---------------------------------------------------------------- the pinned host key


def test_a_changed_host_key_is_refused_and_nothing_is_written(ssh_server: SshServer, tmp_path: Path) -> None:
    other_line = keygen(tmp_path / "other_host_key")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(ssh_server.known_hosts_line(other_line))
    remote = tmp_path / "remote"
    error = _deploy_error(_target(ssh_server, remote, known_hosts=str(known_hosts)))
    assert error.code == "target-ssh-host-key-changed"
    assert f"{ssh_server.host}:{ssh_server.port}" in error.message
    assert not remote.exists()
    assert known_hosts.read_text() == ssh_server.known_hosts_line(other_line)  # never rewritten


@pytest.mark.parametrize("content", ["", "[127.0.0.2]:22 {key}\n"], ids=["empty", "other-host"])
def test_an_unknown_host_is_refused_without_trust_on_first_use(
    ssh_server: SshServer, tmp_path: Path, content: str
) -> None:
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(content.format(key=ssh_server.host_key_line))
    remote = tmp_path / "remote"
    error = _deploy_error(_target(ssh_server, remote, known_hosts=str(known_hosts)))
    assert error.code == "target-ssh-host-unknown"
    assert not remote.exists()
    assert known_hosts.read_text() == content.format(key=ssh_server.host_key_line)  # nothing added


def test_a_missing_known_hosts_file_is_refused(ssh_server: SshServer, tmp_path: Path) -> None:
    error = _deploy_error(_target(ssh_server, tmp_path / "remote", known_hosts=str(tmp_path / "absent")))
    assert error.code == "target-ssh-known-hosts-invalid"


# ---------------------------------------------------------------- credentials and connection


def test_a_key_file_readable_by_others_is_refused(ssh_server: SshServer, tmp_path: Path) -> None:
    key = tmp_path / "client"
    key.write_bytes(ssh_server.client_key.read_bytes())
    key.chmod(0o644)
    error = _deploy_error(_target(ssh_server, tmp_path / "remote", key_file=str(key)))
    assert error.code == "target-ssh-key-unusable" and "644" in error.message
    assert not (tmp_path / "remote").exists()


def test_an_unauthorized_key_is_refused(ssh_server: SshServer, tmp_path: Path) -> None:
    keygen(tmp_path / "stranger")
    error = _deploy_error(_target(ssh_server, tmp_path / "remote", key_file=str(tmp_path / "stranger")))
    assert error.code == "target-ssh-auth-failed"


def test_an_encrypted_key_opens_with_its_passphrase_from_the_environment(ssh_server: SshServer, tmp_path: Path) -> None:
    key = tmp_path / "locked"
    public = keygen(key, passphrase="correct horse battery")
    authorized = ssh_server.directory / "authorized_keys"
    before = authorized.read_text()
    authorized.write_text(before + public + "\n")
    remote = tmp_path / "remote"
    config = {"key_file": str(key), "key_passphrase_env": "SSH_KEY_PASSPHRASE"}
    try:
        assert _deploy_error(_target(ssh_server, remote, **config)).code == "target-secret-missing"
        wrong = _deploy_error(_target(ssh_server, remote, env={"SSH_KEY_PASSPHRASE": "wrong-words"}, **config))
        assert wrong.code == "target-ssh-key-unusable" and "wrong-words" not in wrong.one_line()
        assert not remote.exists()
        right = _target(ssh_server, remote, env={"SSH_KEY_PASSPHRASE": "correct horse battery"}, **config)
        right.deploy(self_signed_bundle("shop", ("shop.example.test",)))
        assert (remote / "shop" / "privkey.pem").exists()
    finally:
        authorized.write_text(before)


def test_a_closed_port_is_unreachable(ssh_server: SshServer, tmp_path: Path) -> None:
    error = _deploy_error(_target(ssh_server, tmp_path / "remote", port=free_port()))
    assert error.code == "target-unreachable"


# ---------------------------------------------------------------- remote paths


def test_a_symlinked_certificate_folder_is_refused(ssh_server: SshServer, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    elsewhere = tmp_path / "elsewhere"
    remote.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere, remote / "shop")
    error = _deploy_error(_target(ssh_server, remote))
    assert error.code == "target-path-unsafe"
    assert list(elsewhere.iterdir()) == []
    assert (remote / "shop").is_symlink()


def test_a_symlinked_file_is_replaced_not_written_through(ssh_server: SshServer, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    (remote / "shop").mkdir(parents=True)
    victim = tmp_path / "victim.pem"
    victim.write_text("untouched")
    os.symlink(victim, remote / "shop" / "privkey.pem")
    bundle = self_signed_bundle("shop", ("shop.example.test",))
    _target(ssh_server, remote).deploy(bundle)
    assert victim.read_text() == "untouched"
    assert not (remote / "shop" / "privkey.pem").is_symlink()
    assert (remote / "shop" / "privkey.pem").read_bytes() == bundle.key_pem.reveal()
    assert [p.name for p in _files_under(remote) if p.name.startswith(TEMP_PREFIX)] == []


def test_an_ssh_agent_authenticates_without_a_key_file(ssh_server: SshServer, tmp_path: Path) -> None:
    agent_binary = shutil.which("ssh-agent") or require_binary("ssh-agent")
    add_binary = shutil.which("ssh-add") or require_binary("ssh-add")
    socket_path = tmp_path / "agent.sock"
    agent = subprocess.Popen([agent_binary, "-D", "-a", str(socket_path)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        env = {"SSH_AUTH_SOCK": str(socket_path)}
        remote = tmp_path / "remote"
        without = _target(ssh_server, remote, env=env, key_file=None, agent=True)
        assert _deploy_error(without).code == "target-ssh-key-unusable"  # the agent holds no key yet
        subprocess.run([add_binary, "-q", str(ssh_server.client_key)], env=env, check=True, capture_output=True)
        bundle = self_signed_bundle("shop", ("shop.example.test",))
        _target(ssh_server, remote, env=env, key_file=None, agent=True).deploy(bundle)
        assert (remote / "shop" / "privkey.pem").read_bytes() == bundle.key_pem.reveal()
        assert _deploy_error(_target(ssh_server, remote, key_file=None, agent=True)).code == "target-ssh-key-unusable"
    finally:
        agent.terminate()
        agent.wait(timeout=10)
