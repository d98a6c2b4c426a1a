"""The nginx and haproxy targets against a real nginx and a real HAProxy (tests/web_servers.py).

Every check ends with a TLS handshake to the server (``observe_served``): a reload that exits 0
proves nothing, only the certificate served does.

* nginx: deploy + SIGHUP serves the new certificate; a deployment ``nginx -t`` rejects is rolled
  back (the previous files, nginx keeps serving the old certificate, a one-line error without
  key material); the CLI end to end (``apply``, ``rotate``) with a local CA.
* HAProxy: the runtime API swaps the certificate in memory (master and worker PIDs unchanged); a
  payload HAProxy refuses is rolled back; a name HAProxy never loaded falls back to a reload.
* Zero downtime (acceptance): a client handshaking in a loop while a rotation is applied sees no
  failed handshake, and the served fingerprint switches from the old certificate to the new.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from certreconcile.domain.certs import read_cert_facts
from certreconcile.errors import TargetError
from certreconcile.plugins.ports import DeployBundle, SecretBytes
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.plugins.targets.haproxy import HaproxyTarget
from certreconcile.plugins.targets.haproxy_config import HaproxyTargetConfig
from certreconcile.plugins.targets.nginx import NginxTarget
from certreconcile.plugins.targets.nginx_config import NginxTargetConfig
from certreconcile.testing import target_contract
from certreconcile.testing.target_contract import bundle_maker, self_signed_bundle, wait_for_fingerprint
from engine import cert, desired_doc
from handshake_loop import assert_zero_downtime
from web_servers import Haproxy, Nginx

pytestmark = pytest.mark.integration

StartNginx = Callable[..., Nginx]
StartHaproxy = Callable[..., Haproxy]

_names = itertools.count()


def _nginx_target(server: Nginx, *, verify: bool = True, **config: str) -> NginxTarget:
    settings: dict[str, str] = {"cert_dir": str(server.cert_dir), "test_command": server.test_command}
    if "reload_command" not in config:
        settings["pid_file"] = str(server.pid_file)
    settings.update(config)
    return NginxTarget(
        "edge-nginx", NginxTargetConfig(**settings), server.prefix, verify=server.address if verify else None
    )


def _haproxy_target(
    server: Haproxy, *, verify: bool = True, verify_timeout: timedelta = timedelta(seconds=30), **config: str | None
) -> HaproxyTarget:
    settings: dict[str, str | None] = {"cert_dir": str(server.cert_dir), "runtime_api": server.runtime_api}
    settings.update(config)
    return HaproxyTarget(
        "edge-haproxy",
        HaproxyTargetConfig(**settings),  # type: ignore[arg-type]
        server.cert_dir,
        verify=server.address if verify else None,
        verify_timeout=verify_timeout,
    )


def _served(address: str, bundle: DeployBundle) -> str | None:
    return observe_served(address, bundle.domains).fingerprint


def _wait_served(address: str, bundle: DeployBundle, timeout: float = 10.0) -> str | None:
    """The fingerprint served for ``bundle``'s names once it is ``bundle``'s, or the last one seen at ``timeout``."""
    deadline = time.monotonic() + timeout
    while (seen := _served(address, bundle)) != bundle.fingerprint and time.monotonic() < deadline:
        time.sleep(0.05)
    return seen


def _mismatched(bundle: DeployBundle) -> DeployBundle:
    """``bundle``'s certificate with another key: every server must refuse it."""
    other_key = self_signed_bundle("other", ("other.example.test",)).key_pem
    return dataclasses.replace(bundle, key_pem=other_key)


def _assert_one_line_without_key(error: TargetError, *keys: SecretBytes) -> None:
    text = error.one_line()
    assert "\n" not in text
    assert "PRIVATE KEY" not in text
    for key in keys:
        lines = [line for line in key.reveal().decode().splitlines() if len(line) >= 16]
        assert not any(line in text for line in lines)


# ---------------------------------------------------------------- nginx


@pytest.mark.parametrize("check", target_contract.CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("verify", [True, False], ids=["handshake", "read-back"])
def test_nginx_passes_the_target_contract(nginx_server: StartNginx, check, verify: bool) -> None:  # type: ignore[no-untyped-def]
    name = f"shop{next(_names)}"
    server = nginx_server({name: [f"{name}.example.test"]})
    check(lambda: _nginx_target(server, verify=verify), bundle_maker(name, (f"{name}.example.test",)))


def test_nginx_key_files_are_private(nginx_server: StartNginx) -> None:
    server = nginx_server({"shop": ["shop.example.test"]})
    target_contract.check_key_files_private(
        lambda: _nginx_target(server), bundle_maker("shop", ("shop.example.test",)), server.cert_dir
    )


@pytest.mark.parametrize("reload", ["pid_file", "reload_command"])
def test_nginx_serves_each_deployment_and_rotation(nginx_server: StartNginx, reload: str) -> None:
    server = nginx_server({"shop": ["shop.example.test", "www.shop.example.test"], "blog": ["blog.example.test"]})
    if reload == "reload_command":
        reload_command = server.test_command.replace(" -t -q", " -s reload")
        target = _nginx_target(server, reload_command=reload_command)
    else:
        target = _nginx_target(server)
    shop = bundle_maker("shop", ("shop.example.test", "www.shop.example.test"))
    first = shop()
    assert _served(server.address, first) == server.initial["shop"].fingerprint
    target.deploy(first)
    assert _wait_served(server.address, first) == first.fingerprint  # both names, one leaf
    assert _served(server.address, server.initial["blog"]) == server.initial["blog"].fingerprint

    rotated = shop()
    target.deploy(rotated)
    assert _wait_served(server.address, rotated) == rotated.fingerprint
    assert wait_for_fingerprint(target, rotated).fingerprint == rotated.fingerprint
    folder = server.cert_dir / "shop"
    assert (folder / "privkey.pem").stat().st_mode & 0o777 == 0o600
    assert (folder / "fullchain.pem").read_text() == rotated.fullchain_pem


def test_nginx_rolls_back_what_nginx_t_rejects(nginx_server: StartNginx) -> None:
    server = nginx_server({"shop": ["shop.example.test"]})
    target = _nginx_target(server)
    shop = bundle_maker("shop", ("shop.example.test",))
    good = shop()
    target.deploy(good)
    assert _wait_served(server.address, good) == good.fingerprint
    folder = server.cert_dir / "shop"
    before = {path.name: path.read_bytes() for path in folder.iterdir()}

    bad = _mismatched(shop())
    with pytest.raises(TargetError) as caught:
        target.deploy(bad)
    error = caught.value
    assert error.code == "target-config-test-failed"
    assert "[emerg]" in error.message  # nginx's own first error line
    assert "previous files restored" in error.message
    _assert_one_line_without_key(error, bad.key_pem, good.key_pem)

    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before  # no temporary file left either
    assert (folder / "privkey.pem").stat().st_mode & 0o777 == 0o600
    time.sleep(0.3)  # had nginx been reloaded, its new worker would be up by now
    assert _served(server.address, good) == good.fingerprint
    target_contract.check_errors_hold_no_key(lambda: target, lambda: _mismatched(shop()))


def test_nginx_removes_a_new_folder_that_nginx_t_rejects(nginx_server: StartNginx) -> None:
    server = nginx_server({"shop": ["shop.example.test"]})
    target = _nginx_target(server, test_command="false")
    with pytest.raises(TargetError) as caught:
        target.deploy(self_signed_bundle("blog", ("blog.example.test",)))
    assert "new files removed" in caught.value.message
    assert not (server.cert_dir / "blog").exists()
    assert (server.cert_dir / "shop" / "fullchain.pem").exists()
    assert _served(server.address, server.initial["shop"]) == server.initial["shop"].fingerprint


def test_nginx_reload_errors_name_the_pid_file(nginx_server: StartNginx, tmp_path: Path) -> None:
    server = nginx_server({"shop": ["shop.example.test"]})
    target = _nginx_target(server, pid_file=str(tmp_path / "missing.pid"))
    with pytest.raises(TargetError) as caught:
        target.deploy(self_signed_bundle("shop", ("shop.example.test",)))
    assert caught.value.code == "target-reload-failed"
    assert "missing.pid" in caught.value.message


# ---------------------------------------------------------------- HAProxy


@pytest.mark.parametrize("check", target_contract.CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("verify", [True, False], ids=["handshake", "read-back"])
def test_haproxy_passes_the_target_contract(haproxy_server: StartHaproxy, check, verify: bool) -> None:  # type: ignore[no-untyped-def]
    name = f"shop{next(_names)}"
    server = haproxy_server({name: [f"{name}.example.test"]})
    check(lambda: _haproxy_target(server, verify=verify), bundle_maker(name, (f"{name}.example.test",)))


def test_haproxy_key_files_are_private(haproxy_server: StartHaproxy) -> None:
    server = haproxy_server({"shop": ["shop.example.test"]})
    target_contract.check_key_files_private(
        lambda: _haproxy_target(server), bundle_maker("shop", ("shop.example.test",)), server.cert_dir
    )


def test_haproxy_runtime_api_swaps_the_certificate_without_a_reload(haproxy_server: StartHaproxy) -> None:
    server = haproxy_server({"shop": ["shop.example.test", "www.shop.example.test"], "blog": ["blog.example.test"]})
    workers = server.worker_pids()
    assert workers
    target = _haproxy_target(server)
    shop = bundle_maker("shop", ("shop.example.test", "www.shop.example.test"))
    for bundle in (shop(), shop()):  # a deployment, then a rotation
        target.deploy(bundle)
        assert _served(server.address, bundle) == bundle.fingerprint  # at once: no reload to wait for
    assert _served(server.address, server.initial["blog"]) == server.initial["blog"].fingerprint
    assert server.pid_file.read_text().strip() == str(server.master_pid)
    assert server.worker_pids() == workers  # no reload: the same worker serves
    combined = (server.cert_dir / "shop.pem").read_bytes()
    assert combined == (bundle.fullchain_pem.rstrip("\n") + "\n").encode() + bundle.key_pem.reveal()
    assert (server.cert_dir / "shop.pem").stat().st_mode & 0o777 == 0o600
    assert (server.cert_dir / "shop" / "fullchain.pem").read_text() == bundle.fullchain_pem


def test_haproxy_read_back_compares_what_haproxy_holds(haproxy_server: StartHaproxy) -> None:
    server = haproxy_server({"shop": ["shop.example.test"]})
    target = _haproxy_target(server, verify=False)
    assert target.observe("shop", ("shop.example.test",)).fingerprint == server.initial["shop"].fingerprint
    # The file changes behind HAProxy's back (no runtime API, no reload): the read-back must say so.
    files_only = _haproxy_target(server, verify=False, runtime_api=None)
    files_only.deploy(self_signed_bundle("shop", ("shop.example.test",)))
    seen = target.observe("shop", ("shop.example.test",))
    assert seen.fingerprint is None
    assert seen.error is not None and "another certificate" in seen.error


def test_haproxy_rolls_back_a_payload_it_refuses(haproxy_server: StartHaproxy) -> None:
    server = haproxy_server({"shop": ["shop.example.test"]})
    target = _haproxy_target(server)
    before = (server.cert_dir / "shop.pem").read_bytes()
    bad = _mismatched(self_signed_bundle("shop", ("shop.example.test",)))
    with pytest.raises(TargetError) as caught:
        target.deploy(bad)
    assert caught.value.code == "target-runtime-api-refused"
    assert "inconsistencies between private key and certificate" in caught.value.message
    _assert_one_line_without_key(caught.value, bad.key_pem)
    assert (server.cert_dir / "shop.pem").read_bytes() == before
    assert _served(server.address, server.initial["shop"]) == server.initial["shop"].fingerprint
    good = self_signed_bundle("shop", ("shop.example.test",))
    target.deploy(good)  # no transaction left behind
    assert _served(server.address, good) == good.fingerprint


def test_haproxy_unknown_certificate_without_reload_is_a_clear_error(haproxy_server: StartHaproxy) -> None:
    server = haproxy_server({"shop": ["shop.example.test"]})
    target = _haproxy_target(server)
    with pytest.raises(TargetError) as caught:
        target.deploy(self_signed_bundle("blog", ("blog.example.test",)))
    assert caught.value.code == "target-cert-not-loaded"
    assert f"crt {server.cert_dir}" in caught.value.hint
    assert (server.cert_dir / "blog.pem").exists()  # written: HAProxy loads it at its next start


def test_haproxy_unknown_certificate_falls_back_to_a_reload(haproxy_server: StartHaproxy) -> None:
    server = haproxy_server({"shop": ["shop.example.test"]}, crt_directory=True)
    target = _haproxy_target(server, pid_file=str(server.pid_file))
    blog = self_signed_bundle("blog", ("blog.example.test",))
    target.deploy(blog)  # HAProxy never loaded blog.pem: SIGUSR2 to the master, which reloads the directory
    assert _wait_served(server.address, blog) == blog.fingerprint
    assert server.pid_file.read_text().strip() == str(server.master_pid)  # the same master, re-executed
    assert _served(server.address, server.initial["shop"]) == server.initial["shop"].fingerprint
    rotated = self_signed_bundle("blog", ("blog.example.test",))
    target.deploy(rotated)  # now loaded: in memory
    assert _served(server.address, rotated) == rotated.fingerprint


def test_haproxy_reload_signal_lost_during_startup_is_sent_again(haproxy_server: StartHaproxy) -> None:
    # Right after start-up HAProxy's master drops SIGUSR2 (seen 5 times out of 5 with 2.6); the
    # target notices through `show ssl cert` that the new certificate is not held and signals again.
    server = haproxy_server({"shop": ["shop.example.test"]}, crt_directory=True, wait_until_loaded=False)
    target = _haproxy_target(server, pid_file=str(server.pid_file))
    blog = self_signed_bundle("blog", ("blog.example.test",))
    target.deploy(blog)  # returns once HAProxy holds blog.pem
    assert _served(server.address, blog) == blog.fingerprint
    assert _served(server.address, server.initial["shop"]) == server.initial["shop"].fingerprint


def test_haproxy_reload_that_never_loads_the_certificate_fails_clearly(haproxy_server: StartHaproxy) -> None:
    server = haproxy_server({"shop": ["shop.example.test"]})  # one crt per bind line: blog.pem is never loaded
    target = _haproxy_target(server, verify=False, verify_timeout=timedelta(seconds=3), pid_file=str(server.pid_file))
    with pytest.raises(TargetError) as caught:
        target.deploy(self_signed_bundle("blog", ("blog.example.test",)))
    assert caught.value.code == "target-reload-failed"
    assert "did not load" in caught.value.message and "within 3 s" in caught.value.message
    assert f"crt {server.cert_dir}" in caught.value.hint
    assert _served(server.address, server.initial["shop"]) == server.initial["shop"].fingerprint  # still serving


# ---------------------------------------------------------------- zero downtime (acceptance)


def test_nginx_rotation_has_zero_failed_handshakes(nginx_server: StartNginx) -> None:
    server = nginx_server({"shop": ["shop.example.test"], "blog": ["blog.example.test"]})
    target = _nginx_target(server)
    new = self_signed_bundle("shop", ("shop.example.test",))
    assert_zero_downtime(server.address, target.deploy, server.initial["shop"].fingerprint, new)


def test_haproxy_rotation_has_zero_failed_handshakes(haproxy_server: StartHaproxy) -> None:
    server = haproxy_server({"shop": ["shop.example.test"], "blog": ["blog.example.test"]})
    target = _haproxy_target(server)
    new = self_signed_bundle("shop", ("shop.example.test",))
    assert_zero_downtime(server.address, target.deploy, server.initial["shop"].fingerprint, new)


# ---------------------------------------------------------------- end to end, through the CLI


def _cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "certreconcile", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result


def test_cli_apply_and_rotate_serve_through_nginx(nginx_server: StartNginx, database_url: str, tmp_path: Path) -> None:
    domains = ["shop.example.com", "www.shop.example.com"]
    server = nginx_server({"shop": domains}, cert_dir=tmp_path / "certs")
    target = {
        "nginx": {"cert_dir": "certs", "pid_file": str(server.pid_file), "test_command": server.test_command},
        "verify": server.address,
        "verify_timeout": "20s",
    }
    doc = desired_doc([cert("shop", *domains, targets=["edge-nginx"])], targets={"edge-nginx": target})
    (tmp_path / "certificates.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    env = {key: value for key, value in os.environ.items() if not key.startswith("CERTRECONCILE_")}
    env.update(
        CERTRECONCILE_DATABASE_URL=database_url,
        CERTRECONCILE_LOCAL_KMS_KEY_FILE=str(tmp_path / "kms" / "master.key"),
        NO_COLOR="1",
        USER="e2e-tester",
    )
    directory = str(tmp_path)
    initial = server.initial["shop"].fingerprint

    _cli("apply", "--dir", directory, "--auto-approve", env=env, cwd=tmp_path)
    issued = read_cert_facts((tmp_path / "certs" / "shop" / "cert.pem").read_text())
    assert issued.fingerprint != initial
    server.drained()
    assert observe_served(server.address, tuple(domains)).fingerprint == issued.fingerprint
    assert (tmp_path / "certs" / "shop" / "privkey.pem").stat().st_mode & 0o777 == 0o600

    _cli("rotate", "shop", "--dir", directory, "--reason", "test", env=env, cwd=tmp_path)
    rotated = read_cert_facts((tmp_path / "certs" / "shop" / "cert.pem").read_text())
    assert rotated.fingerprint not in (issued.fingerprint, initial)
    server.drained()
    assert observe_served(server.address, tuple(domains)).fingerprint == rotated.fingerprint
    assert shlex.split(server.test_command)[0].endswith("nginx")
