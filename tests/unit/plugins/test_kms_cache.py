"""CachingKms: an unwrapped DEK is reused within max_age and max_uses, for the same context only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from certreconcile.clock import FixedClock
from certreconcile.errors import KmsError
from certreconcile.plugins.kms.cache import CachingKms
from certreconcile.plugins.ports import EncryptionContext
from certreconcile.testing.fake_kms import FakeKms
from certreconcile.testing.kms_contract import CHECKS, WRAP_CHECKS

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ROW = EncryptionContext(table="Certificate", row_id="row-1")


def _cached(**bounds: object) -> tuple[FakeKms, CachingKms, FixedClock]:
    inner = FakeKms()
    clock = FixedClock(T0)
    options: dict[str, object] = {"max_age": timedelta(minutes=5), "max_uses": 100, "max_size": 10, **bounds}
    return inner, CachingKms(inner, clock=clock, **options), clock  # type: ignore[arg-type]


@pytest.mark.parametrize("check", CHECKS + WRAP_CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
def test_the_cache_passes_the_kms_contract(check: object) -> None:
    _inner, kms, _clock = _cached()
    check(lambda: kms)  # type: ignore[operator]


def test_reuse_within_max_age_then_expiry() -> None:
    inner, kms, clock = _cached()
    dek, wrapped = kms.generate_data_key(ROW)
    assert kms.decrypt_data_key(wrapped, ROW) == dek
    clock.advance(timedelta(minutes=4, seconds=59))
    assert kms.decrypt_data_key(wrapped, ROW) == dek
    assert inner.decrypted == 1
    clock.advance(timedelta(seconds=1))  # exactly max_age: expired
    assert kms.decrypt_data_key(wrapped, ROW) == dek
    assert inner.decrypted == 2


def test_reuse_bounded_by_max_uses() -> None:
    inner, kms, _clock = _cached(max_uses=3)
    dek, wrapped = kms.generate_data_key(ROW)
    for _ in range(3):
        assert kms.decrypt_data_key(wrapped, ROW) == dek
    assert inner.decrypted == 1  # one unwrap served three uses
    assert kms.decrypt_data_key(wrapped, ROW) == dek
    assert inner.decrypted == 2


def test_max_uses_one_caches_nothing() -> None:
    inner, kms, _clock = _cached(max_uses=1)
    _dek, wrapped = kms.generate_data_key(ROW)
    kms.decrypt_data_key(wrapped, ROW)
    kms.decrypt_data_key(wrapped, ROW)
    assert inner.decrypted == 2
    assert len(kms) == 0


def test_least_recently_used_is_evicted() -> None:
    inner, kms, _clock = _cached(max_size=2)
    contexts = [EncryptionContext(table="Certificate", row_id=f"row-{n}") for n in range(3)]
    wrapped = [kms.generate_data_key(context)[1] for context in contexts]
    kms.decrypt_data_key(wrapped[0], contexts[0])
    kms.decrypt_data_key(wrapped[1], contexts[1])
    kms.decrypt_data_key(wrapped[0], contexts[0])  # row-0 is now the most recent
    kms.decrypt_data_key(wrapped[2], contexts[2])  # evicts row-1
    assert len(kms) == 2
    assert inner.decrypted == 3
    kms.decrypt_data_key(wrapped[0], contexts[0])
    assert inner.decrypted == 3
    kms.decrypt_data_key(wrapped[1], contexts[1])
    assert inner.decrypted == 4


def test_never_served_across_contexts() -> None:
    inner, kms, _clock = _cached()
    _dek, wrapped = kms.generate_data_key(ROW)
    kms.decrypt_data_key(wrapped, ROW)
    other = EncryptionContext(table="Certificate", row_id="row-2")
    with pytest.raises(KmsError):
        kms.decrypt_data_key(wrapped, other)  # asks the KMS, which refuses: the cache is not consulted
    assert inner.decrypted == 2
    with pytest.raises(KmsError):
        kms.decrypt_data_key(wrapped, EncryptionContext(table="Certificate", row_id="row-1", purpose="ca-key"))


def test_errors_are_not_cached_and_generated_keys_are_not_cached() -> None:
    inner, kms, _clock = _cached()
    _dek, wrapped = kms.generate_data_key(ROW)
    assert len(kms) == 0
    inner.available = False
    with pytest.raises(KmsError):
        kms.decrypt_data_key(wrapped, ROW)
    inner.available = True
    kms.decrypt_data_key(wrapped, ROW)
    assert len(kms) == 1


def test_declared_cache_wraps_the_kms(tmp_path: object) -> None:
    from pathlib import Path

    from certreconcile.desired import load_desired
    from certreconcile.plugins.kms.local import LocalKms
    from certreconcile.plugins.registry import PluginContext, create_kms

    directory = Path(str(tmp_path))
    (directory / "kms.yaml").write_text("kms:\n  local: {}\n  cache: {max_age: 5m, max_uses: 100}\n")
    desired = load_desired(directory)
    assert desired.kms.cache is not None
    assert desired.kms.cache.max_age == timedelta(minutes=5)
    context = PluginContext(desired_dir=directory, data_dir=directory / "data", env={})
    kms = create_kms(desired.kms, context)
    assert isinstance(kms, CachingKms)
    (directory / "kms.yaml").write_text("kms:\n  local: {}\n")
    assert isinstance(create_kms(load_desired(directory).kms, context), LocalKms)  # off by default
