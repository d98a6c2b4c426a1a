"""The nginx and haproxy targets without the servers: configuration, rollback, the runtime API's wire format.

The real nginx and HAProxy are in tests/integration/test_targets_nginx_haproxy.py.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from certreconcile.desired.documents import TargetEntry, entry_model
from certreconcile.errors import TargetError
from certreconcile.plugins.targets.haproxy import HaproxyRuntimeApi, HaproxyTarget
from certreconcile.plugins.targets.haproxy_config import HaproxyTargetConfig
from certreconcile.plugins.targets.nginx import NginxTarget
from certreconcile.plugins.targets.nginx_config import NginxTargetConfig
from certreconcile.plugins.targets.safe_files import FileContent, FileSet, PemFolderSnapshot
from certreconcile.plugins.targets.server_control import first_diagnostic
from certreconcile.testing.target_contract import self_signed_bundle


def test_target_entries_accept_both_kinds() -> None:
    entries = entry_model(TargetEntry)
    entry = entries.model_validate({"nginx": {"cert_dir": "/etc/nginx/certs"}, "verify": "127.0.0.1:443"})
    kind, config = entry.kind()
    assert kind == "nginx"
    assert isinstance(config, NginxTargetConfig)
    assert (config.binary, config.test_command, config.pid_file) == ("nginx", None, None)
    kind, config = entries.model_validate({"haproxy": {"cert_dir": "c", "runtime_api": "127.0.0.1:9999"}}).kind()
    assert kind == "haproxy"


@pytest.mark.parametrize("model", [NginxTargetConfig, HaproxyTargetConfig])
def test_pid_file_and_reload_command_exclude_each_other(model: type[NginxTargetConfig | HaproxyTargetConfig]) -> None:
    with pytest.raises(ValidationError, match="exclude each other"):
        model.model_validate({"cert_dir": "c", "pid_file": "/run/x.pid", "reload_command": "systemctl reload x"})


@pytest.mark.parametrize("address", ["unix:/run/haproxy/admin.sock", "127.0.0.1:9999", "[::1]:9999", "lb:9999"])
def test_runtime_api_addresses(address: str) -> None:
    assert HaproxyTargetConfig(cert_dir="c", runtime_api=address).runtime_api == address


@pytest.mark.parametrize("address", ["/run/haproxy/admin.sock", "unix:relative.sock", "127.0.0.1", "http://lb:9999"])
def test_runtime_api_refuses_other_forms(address: str) -> None:
    with pytest.raises(ValidationError):
        HaproxyTargetConfig(cert_dir="c", runtime_api=address)


def test_first_diagnostic_prefers_errors_and_never_quotes_pem() -> None:
    output = (
        b"nginx: the configuration file /etc/nginx/nginx.conf syntax is ok\n"
        b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"
        b'nginx: [emerg] SSL_CTX_use_PrivateKey("/c/shop/privkey.pem") failed (key values mismatch)\n'
        b"nginx: configuration file /etc/nginx/nginx.conf test failed\n"
    )
    assert first_diagnostic(output).startswith("nginx: [emerg] SSL_CTX_use_PrivateKey")
    assert first_diagnostic(b"-----BEGIN PRIVATE KEY-----\n") == ""
    assert first_diagnostic(b"just this\n") == "just this"


def test_snapshot_restores_files_and_removes_new_folders(tmp_path: Path) -> None:
    kept, added = tmp_path / "a" / "privkey.pem", tmp_path / "b" / "new" / "cert.pem"
    kept.parent.mkdir()
    kept.write_bytes(b"old")
    kept.chmod(0o600)
    new = FileContent(b"new", 0o644)
    snapshot = PemFolderSnapshot.take(FileSet("t", tmp_path, {"a/privkey.pem": new, "b/new/cert.pem": new}))
    for path in (kept, added):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"new")
    snapshot.restore()
    assert kept.read_bytes() == b"old"
    assert kept.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / "b").exists()
    assert snapshot.previous["a/privkey.pem"] == FileContent(b"old", 0o600)


def test_nginx_rolls_back_when_the_test_command_fails(tmp_path: Path) -> None:
    marker = tmp_path / "reloaded"
    first, second = (self_signed_bundle("shop", ("shop.example.test",)) for _ in range(2))
    config = {"cert_dir": "certs", "reload_command": f"touch {marker}"}
    NginxTarget("edge", NginxTargetConfig(**config, test_command="true"), tmp_path).deploy(first)
    assert marker.exists()
    marker.unlink()
    failing = NginxTarget(
        "edge", NginxTargetConfig(**config, test_command="sh -c 'echo \"[emerg] bad\" >&2; exit 1'"), tmp_path
    )
    with pytest.raises(TargetError) as caught:
        failing.deploy(second)
    assert caught.value.code == "target-config-test-failed"
    assert "[emerg] bad" in caught.value.message
    assert "previous files restored" in caught.value.message
    assert (tmp_path / "certs" / "shop" / "fullchain.pem").read_text() == first.fullchain_pem
    assert (tmp_path / "certs" / "shop" / "privkey.pem").read_bytes() == first.key_pem.reveal()
    assert not marker.exists()  # not reloaded
    assert sorted(path.name for path in (tmp_path / "certs" / "shop").iterdir()) == [
        "cert.pem",
        "chain.pem",
        "fullchain.pem",
        "privkey.pem",
    ]


@pytest.fixture
def fake_runtime_api(tmp_path: Path) -> Iterator[tuple[str, list[bytes], list[bytes]]]:
    """A unix socket answering each connection with the next canned answer; records what it received."""
    path = tmp_path / "admin.sock"
    answers: list[bytes] = []
    received: list[bytes] = []
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                data = b""
                while not (data.endswith(b"\n\n") or (b"<<" not in data and data.endswith(b"\n"))):
                    chunk = connection.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                received.append(data)
                connection.sendall(answers.pop(0) if answers else b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"unix:{path}", answers, received
    listener.close()
    thread.join(timeout=5)


def test_haproxy_speaks_set_and_commit_with_a_payload(
    tmp_path: Path, fake_runtime_api: tuple[str, list[bytes], list[bytes]]
) -> None:
    address, answers, received = fake_runtime_api
    crt = tmp_path / "certs" / "shop.pem"
    answers += [
        b"No ongoing transaction!\n\n",
        f"Transaction created for certificate {crt}!\n\n".encode(),
        f"Committing {crt}.\nSuccess!\n\n".encode(),
    ]
    bundle = self_signed_bundle("shop", ("shop.example.test",))
    HaproxyTarget("lb", HaproxyTargetConfig(cert_dir="certs", runtime_api=address), tmp_path).deploy(bundle)
    assert received[0] == f"abort ssl cert {crt}\n".encode()
    header, _, payload = received[1].partition(b"\n")
    assert header == f"set ssl cert {crt} <<".encode()
    assert payload.endswith(b"\n\n") and b"\n\n" not in payload[:-2]  # an empty line ends the payload
    assert payload.strip() == crt.read_bytes().strip()
    assert received[2] == f"commit ssl cert {crt}\n".encode()


def test_haproxy_unknown_certificate_without_reload(
    tmp_path: Path, fake_runtime_api: tuple[str, list[bytes], list[bytes]]
) -> None:
    address, answers, _ = fake_runtime_api
    answers += [
        b"No ongoing transaction!\n\n",
        b"Can't replace a certificate which is not referenced by the configuration!\nCan't update x!\n\n",
    ]
    target = HaproxyTarget("lb", HaproxyTargetConfig(cert_dir="certs", runtime_api=address), tmp_path)
    with pytest.raises(TargetError) as caught:
        target.deploy(self_signed_bundle("shop", ("shop.example.test",)))
    assert caught.value.code == "target-cert-not-loaded"
    assert "crt " in caught.value.hint


def test_runtime_api_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    target = HaproxyTarget(
        "lb", HaproxyTargetConfig(cert_dir="certs", runtime_api=f"unix:{tmp_path}/none.sock"), tmp_path
    )
    with pytest.raises(TargetError) as caught:
        target.deploy(self_signed_bundle("shop", ("shop.example.test",)))
    assert caught.value.code == "target-runtime-api-failed"
    assert "\n" not in caught.value.one_line()
    assert HaproxyRuntimeApi("127.0.0.1:1").address == "127.0.0.1:1"


def test_haproxy_check_command_failure_restores_the_files(tmp_path: Path) -> None:
    first, second = (self_signed_bundle("shop", ("shop.example.test",)) for _ in range(2))
    HaproxyTarget("lb", HaproxyTargetConfig(cert_dir="certs"), tmp_path).deploy(first)  # files only
    combined = (tmp_path / "certs" / "shop.pem").read_bytes()
    assert combined.startswith(first.cert_pem.encode()) and combined.endswith(first.key_pem.reveal())
    failing = HaproxyTarget("lb", HaproxyTargetConfig(cert_dir="certs", test_command="false"), tmp_path)
    with pytest.raises(TargetError) as caught:
        failing.deploy(second)
    assert caught.value.code == "target-config-test-failed"
    assert "previous files restored, HAProxy not updated" in caught.value.message
    assert (tmp_path / "certs" / "shop.pem").read_bytes() == combined
    assert (tmp_path / "certs" / "shop" / "cert.pem").read_text() == first.cert_pem
