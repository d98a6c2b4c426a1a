"""The TLS client contexts a fan-out's webhook deliveries share: reused while the files are unchanged."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from acme_servers import make_tls_bundle
from certreconcile.errors import TargetError
from certreconcile.plugins.targets.tls_contexts import ContextCache
from certreconcile.plugins.targets.webhook import WebhookTarget
from certreconcile.plugins.targets.webhook_config import WebhookTargetConfig


class Builds:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> ssl.SSLContext:
        self.count += 1
        return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_context_while_the_files_are_unchanged(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("one")
    cache, build = ContextCache(), Builds()
    first = cache.get((bundle, None, None), build)
    assert cache.get((bundle, None, None), build) is first
    assert build.count == 1
    bundle.write_text("two, longer")  # another content: another context
    assert cache.get((bundle, None, None), build) is not first
    assert build.count == 2
    assert cache.get((None, None, None), build) is not first  # the system trust store: its own


def test_a_context_is_built_again_after_its_time(tmp_path: Path) -> None:
    clock, build = Clock(), Builds()
    cache = ContextCache(ttl=300, monotonic=clock)
    first = cache.get((None,), build)
    clock.now = 299.0
    assert cache.get((None,), build) is first
    clock.now = 300.0
    assert cache.get((None,), build) is not first
    assert build.count == 2


def test_a_missing_file_is_never_cached_and_the_build_says_why(tmp_path: Path) -> None:
    build = Builds()
    cache = ContextCache()
    cache.get((tmp_path / "gone.pem",), build)
    cache.get((tmp_path / "gone.pem",), build)
    assert build.count == 2


def test_the_oldest_context_makes_room(tmp_path: Path) -> None:
    clock, build = Clock(), Builds()
    cache = ContextCache(size=2, monotonic=clock)
    files = []
    for index in range(3):
        path = tmp_path / f"ca-{index}.pem"
        path.write_text(str(index))
        files.append((path,))
        clock.now += 1
        cache.get(files[-1], build)
    assert build.count == 3
    cache.get(files[2], build)
    cache.get(files[1], build)
    assert build.count == 3  # still there
    cache.get(files[0], build)
    assert build.count == 4  # the oldest was dropped


def _webhook(name: str, ca: Path, tmp_path: Path) -> WebhookTarget:
    config = WebhookTargetConfig(url=f"https://127.0.0.1:8443/{name}", secret_env="SECRET", ca_bundle=str(ca))
    return WebhookTarget(name, config, env={"SECRET": "s"}, base_dir=tmp_path)


def test_webhook_targets_with_the_same_files_share_their_context(tmp_path: Path) -> None:
    ca, _cert, _key = make_tls_bundle(tmp_path / "one")
    other, _cert, _key = make_tls_bundle(tmp_path / "two")
    first = _webhook("a", ca, tmp_path)._tls_context()
    assert _webhook("b", ca, tmp_path)._tls_context() is first
    assert _webhook("c", other, tmp_path)._tls_context() is not first
    assert first.minimum_version is ssl.TLSVersion.TLSv1_2
    assert first.verify_mode is ssl.CERT_REQUIRED


def test_an_unreadable_bundle_still_fails_each_delivery(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pem"
    broken.write_text("not a certificate")
    for _ in range(2):
        with pytest.raises(TargetError, match="cannot read the CA bundle"):
            _webhook("a", broken, tmp_path)._tls_context()
