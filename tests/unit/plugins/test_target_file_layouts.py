"""The files, envoy and traefik targets on disk, and the target contract they pass (no server needed)."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
import yaml

from certreconcile.desired.documents import TargetEntry, entry_model
from certreconcile.desired.model import TargetSpec
from certreconcile.errors import TargetError
from certreconcile.plugins.registry import PluginContext, available_kinds, create_target
from certreconcile.plugins.targets.caddy import CaddyTarget
from certreconcile.plugins.targets.envoy import EnvoyTarget
from certreconcile.plugins.targets.envoy_config import EnvoyTargetConfig
from certreconcile.plugins.targets.files import FilesTarget
from certreconcile.plugins.targets.files_config import FilesTargetConfig
from certreconcile.plugins.targets.traefik import TraefikTarget
from certreconcile.plugins.targets.traefik_config import TraefikTargetConfig
from certreconcile.testing import target_contract
from certreconcile.testing.target_contract import bundle_maker, self_signed_bundle

SHOP = bundle_maker("shop", ("shop.example.test", "www.shop.example.test"))


def _files(directory: Path) -> FilesTarget:
    return FilesTarget("deploy-dir", FilesTargetConfig(dir=str(directory)), directory.parent)


def _envoy(directory: Path) -> EnvoyTarget:
    return EnvoyTarget("edge-envoy", EnvoyTargetConfig(sds_dir=str(directory)), directory.parent)


def _traefik(directory: Path) -> TraefikTarget:
    return TraefikTarget("edge-traefik", TraefikTargetConfig(dynamic_dir=str(directory)), directory.parent)


MAKERS = {"files": _files, "envoy": _envoy, "traefik": _traefik}


def _versions(folder: Path) -> list[str]:
    return sorted(e.name for e in folder.iterdir() if e.name.startswith("..") and e.is_dir() and not e.is_symlink())


# ---------------------------------------------------------------- the contract, for every file-writing target


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("check", target_contract.CHECKS, ids=lambda check: check.__name__)
def test_file_targets_pass_the_contract(tmp_path: Path, kind: str, check) -> None:  # type: ignore[no-untyped-def]
    check(lambda: MAKERS[kind](tmp_path / "out"), SHOP)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_file_targets_write_the_key_0600_only(tmp_path: Path, kind: str) -> None:
    target_contract.check_key_files_private(lambda: MAKERS[kind](tmp_path / "out"), SHOP, tmp_path / "out")


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_file_target_errors_hold_no_key(tmp_path: Path, kind: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")  # ENOTDIR, whoever runs the tests (root included)
    target_contract.check_errors_hold_no_key(lambda: MAKERS[kind](blocker / "out"), SHOP)
    with pytest.raises(TargetError) as raised:
        MAKERS[kind](blocker / "out").deploy(SHOP())
    assert raised.value.code == "target-write-failed"


# ---------------------------------------------------------------- envoy


def test_envoy_layout(tmp_path: Path) -> None:
    bundle = SHOP()
    _envoy(tmp_path).deploy(bundle)
    folder = tmp_path / "shop"
    data = folder / "..data"
    assert data.is_symlink()
    assert not os.readlink(data).startswith("/")  # relative: the folder can be mounted elsewhere
    assert os.readlink(data).startswith(f"..{bundle.fingerprint[:16]}.")
    for name in ("sds.yaml", "fullchain.pem", "chain.pem", "cert.pem", "privkey.pem"):
        assert os.readlink(folder / name) == f"..data/{name}"
    version = data.resolve()
    assert sorted(p.name for p in version.iterdir()) == [
        "cert.pem",
        "chain.pem",
        "fullchain.pem",
        "privkey.pem",
        "sds.yaml",
    ]
    assert {p.name: p.stat().st_mode & 0o777 for p in version.iterdir()} == {
        "cert.pem": 0o644,
        "chain.pem": 0o644,
        "fullchain.pem": 0o644,
        "privkey.pem": 0o600,
        "sds.yaml": 0o644,
    }
    document = yaml.safe_load((folder / "sds.yaml").read_text())
    assert document == {
        "resources": [
            {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                "name": "shop",
                "tls_certificate": {
                    "certificate_chain": {"filename": str(folder / "fullchain.pem")},
                    "private_key": {"filename": str(folder / "privkey.pem")},
                    "watched_directory": {"path": str(folder)},
                },
            }
        ]
    }


def test_envoy_redeploy_swaps_nothing_and_rotation_removes_the_old_version(tmp_path: Path) -> None:
    target, first, second = _envoy(tmp_path), SHOP(), SHOP()
    folder = tmp_path / "shop"
    target.deploy(first)
    before = (os.readlink(folder / "..data"), _versions(folder))
    target.deploy(first)
    assert (os.readlink(folder / "..data"), _versions(folder)) == before
    target.deploy(second)
    assert _versions(folder) == [os.readlink(folder / "..data")]
    assert (folder / "privkey.pem").read_bytes() == second.key_pem.reveal()
    assert not (folder / "..data_tmp").exists()


def test_envoy_relative_sds_dir_is_relative_to_the_desired_state(tmp_path: Path) -> None:
    target = EnvoyTarget("edge-envoy", EnvoyTargetConfig(sds_dir="sds"), tmp_path)
    target.deploy(SHOP())
    document = yaml.safe_load((tmp_path / "sds" / "shop" / "sds.yaml").read_text())
    assert document["resources"][0]["tls_certificate"]["watched_directory"] == {"path": str(tmp_path / "sds" / "shop")}


def test_envoy_read_back_errors(tmp_path: Path) -> None:
    target = _envoy(tmp_path)
    missing = target.observe("shop", ("shop.example.test",))
    assert missing.fingerprint is None
    assert missing.error is not None
    assert "..data" in missing.error
    target.deploy(SHOP())
    other_name = target.observe("blog", ("blog.example.test",))
    assert other_name.fingerprint is None
    (tmp_path / "blog").symlink_to(tmp_path / "shop")  # a folder whose sds.yaml names another secret
    wrong = target.observe("blog", ("blog.example.test",))
    assert wrong.fingerprint is None
    assert wrong.error is not None
    assert "does not declare the secret blog" in wrong.error


# ---------------------------------------------------------------- traefik


def test_traefik_layout_and_versions(tmp_path: Path) -> None:
    target = _traefik(tmp_path)
    folder = tmp_path / "shop"
    config_file = tmp_path / "certreconcile-shop.yaml"
    first, second, third = SHOP(), SHOP(), SHOP()
    target.deploy(first)
    document = yaml.safe_load(config_file.read_text())
    version = (folder / "..data").resolve()
    assert document == {
        "tls": {"certificates": [{"certFile": str(version / "fullchain.pem"), "keyFile": str(version / "privkey.pem")}]}
    }
    assert config_file.stat().st_mode & 0o777 == 0o644
    assert (version / "privkey.pem").stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["certreconcile-shop.yaml"]

    inode = config_file.stat().st_ino
    target.deploy(first)  # idempotent: not even rewritten (no reload of Traefik)
    assert config_file.stat().st_ino == inode

    target.deploy(second)
    second_version = (folder / "..data").resolve()
    assert _versions(folder) == sorted([version.name, second_version.name])  # the previous one stays
    target.deploy(third)
    assert _versions(folder) == sorted([second_version.name, (folder / "..data").resolve().name])
    assert yaml.safe_load(config_file.read_text())["tls"]["certificates"][0]["keyFile"].startswith(
        str((folder / "..data").resolve())
    )
    assert target.observe("shop", third.domains).fingerprint == third.fingerprint


def test_traefik_read_back_errors(tmp_path: Path) -> None:
    target = _traefik(tmp_path)
    assert target.observe("shop", ("shop.example.test",)).fingerprint is None
    (tmp_path / "certreconcile-shop.yaml").write_text("tls: {}\n")
    seen = target.observe("shop", ("shop.example.test",))
    assert seen.error is not None
    assert "lists no certificate" in seen.error
    (tmp_path / "certreconcile-shop.yaml").write_text(
        yaml.safe_dump({"tls": {"certificates": [{"certFile": "/nonexistent/c.pem", "keyFile": "/nonexistent/k.pem"}]}})
    )
    seen = target.observe("shop", ("shop.example.test",))
    assert seen.error is not None
    assert "is missing" in seen.error


# ---------------------------------------------------------------- declarations and registry


def test_target_kinds_parse_and_are_registered(tmp_path: Path) -> None:
    declared = yaml.safe_load(
        """
        edge-caddy: {caddy: {tags: [edge]}, verify: "127.0.0.1:443"}
        edge-envoy: {envoy: {sds_dir: sds}}
        edge-traefik: {traefik: {dynamic_dir: /etc/traefik/dynamic}, verify_timeout: 60s}
        """
    )
    context = PluginContext(desired_dir=tmp_path, data_dir=tmp_path / "data", env={})
    expected = {"edge-caddy": CaddyTarget, "edge-envoy": EnvoyTarget, "edge-traefik": TraefikTarget}
    assert {"caddy", "envoy", "traefik"} <= available_kinds("targets")
    for name, body in declared.items():
        entry = entry_model(TargetEntry).model_validate(body)
        kind, config = entry.kind()
        spec = TargetSpec(name=name, kind=kind, config=config, fingerprint="x", verify=entry.verify)
        target = create_target(spec, context)
        assert isinstance(target, expected[name])
        assert target.name == name
    caddy = entry_model(TargetEntry).model_validate(declared["edge-caddy"]).caddy
    assert caddy is not None
    assert caddy.admin == "http://localhost:2019"


@pytest.mark.parametrize(
    "body",
    [
        {"caddy": {"admin": "localhost:2019"}},  # no scheme
        {"caddy": {"admin": "http://user:pw@localhost:2019"}},
        {"envoy": {}},  # sds_dir is required
        {"traefik": {"dynamic_dir": ""}},
        {"traefik": {"dynamic_dir": "d", "watch": True}},  # unknown key
    ],
)
def test_invalid_target_declarations_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # pydantic.ValidationError
        entry_model(TargetEntry).model_validate(body)


def test_verify_timeout_is_the_declared_one(tmp_path: Path) -> None:
    target = EnvoyTarget("e", EnvoyTargetConfig(sds_dir="x"), tmp_path, verify_timeout=datetime.timedelta(seconds=7))
    assert target.verify_timeout() == datetime.timedelta(seconds=7)
    assert self_signed_bundle("n", ("n.example.test",)).chain_pem == ""
