"""Benchmark: ``kms rewrap`` of N stored certificate keys from one local master key to another.

    python bench/rewrap.py [--sizes 1000,10000] [--url ADMIN_URL]

For each N: a fresh migrated PostgreSQL database holding N certificates whose private keys are
sealed under the old local KMS key, then :func:`rewrap_keys` to a new local key, as
``certreconcile kms rewrap --to`` runs it: only the data keys are re-wrapped (ciphertext and
nonce unchanged, no private key decrypted), each row by compare-and-set, each audited.
Reported: seconds and rows/s. The run is checked: every row rewrapped, none failed, and every
key opens under the new master key only.

Without ``--url`` (or ``CERTRECONCILE_TEST_DATABASE_URL``) a throw-away embedded PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from certreconcile.actual.repository import PostgresStore
from certreconcile.actual.store import KeyRefTable
from certreconcile.apply.rewrap import key_context, rewrap_keys
from certreconcile.clock import FixedClock
from certreconcile.crypto.envelope import open_envelope
from certreconcile.errors import KmsError
from certreconcile.plugins.kms.local import LocalKms

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine import SEALED_KEY_PREFIX, sealed_certificate_rows
from issuance import admin_url, fresh_database

NOW = datetime(2026, 12, 1, tzinfo=UTC)


def check(store: PostgresStore, old: LocalKms, new: LocalKms, count: int) -> None:
    with store.session() as session:
        stored = session.list_key_refs(KeyRefTable.CERTIFICATE, None, count + 1)
    assert len(stored) == count
    for item in stored:
        context = key_context(item)
        assert open_envelope(new, item.key_ref, context).reveal().startswith(SEALED_KEY_PREFIX)
        try:
            open_envelope(old, item.key_ref, context)
        except KmsError:
            continue
        raise AssertionError("a key still opens under the old master key")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--url", default=None, help="admin URL of a PostgreSQL server (may CREATE DATABASE)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="certreconcile-bench-") as temporary:
        scratch = Path(temporary)
        admin = admin_url(args, scratch)
        print(f"{'N':>6} {'rewrap (s)':>11} {'rows/s':>8}")
        for count in (int(size) for size in args.sizes.split(",")):
            old, new = LocalKms(scratch / f"old-{count}.key"), LocalKms(scratch / f"new-{count}.key")
            store = PostgresStore(fresh_database(admin, f"certreconcile_bench_rewrap_{count}"))
            sealed_certificate_rows(store, old, count, NOW)
            started = time.perf_counter()
            result = rewrap_keys(store, new, [old], actor="user:bench", clock=FixedClock(NOW))
            elapsed = time.perf_counter() - started
            assert result.ok, result
            assert result.rewrapped == count, result
            check(store, old, new, count)
            print(f"{count:>6} {elapsed:>11.2f} {count / elapsed:>8.0f}")


if __name__ == "__main__":
    main()
