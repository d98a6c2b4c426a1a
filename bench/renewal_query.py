"""Benchmark: the renewal-window query on 1,000,000 certificates, with three index choices.

    PYTHONPATH=src python bench/renewal_query.py [--rows 1000000] [--runs 9] [--url URL]

Without ``--url`` a throw-away embedded PostgreSQL is started in a temporary directory. The rows
have a realistic spread: 80% active, 5% expiring_soon, 10% superseded, 3% expired, 2%
revoked, ``not_after`` uniform over 2026; the window (``not_after < 2026-01-08``)
matches ~1.6% of the rows. Each variant is measured after VACUUM ANALYZE; the table
shows the median of ``--runs`` runs, server side (EXPLAIN ANALYZE, no per-node timing)
and client side (execute + fetch every row with psycopg).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from psycopg import sql

from certreconcile.actual.embedded import EmbeddedPostgres
from certreconcile.actual.migrate import upgrade

FILL = """
INSERT INTO Certificate (domain, serial_number, not_before, not_after, status, fingerprint, key_ref,
                         name, issuer, key_type, cert_pem, chain_pem)
SELECT 'host' || g || '.example.com', 'serial-' || g,
       t.not_after - interval '90 days', t.not_after,
       CASE WHEN mod(g, 100) < 80 THEN 'active' WHEN mod(g, 100) < 85 THEN 'expiring_soon'
            WHEN mod(g, 100) < 95 THEN 'superseded' WHEN mod(g, 100) < 98 THEN 'expired' ELSE 'revoked' END,
       md5(g::text) || md5(g::text), '{"kms":"local","key_id":"k","ct":"' || md5(g::text) || '"}',
       'cert-' || g, 'letsencrypt', 'ecdsa-p256', repeat('M', %(pem_bytes)s), ''
FROM generate_series(%(first)s, %(last)s) AS g,
     LATERAL (SELECT timestamptz '2026-01-01 00:00+00'
                     + ((hashint4(g) & 2147483647) %% 525600) * interval '1 minute' AS not_after) AS t
"""
QUERY = "SELECT id, name, not_after FROM Certificate WHERE status IN ('active','expiring_soon') AND not_after < %s"
THRESHOLD = "2026-01-08 00:00+00"
PREDICATE = "WHERE status IN ('active','expiring_soon')"
VARIANTS: list[tuple[str, str | None]] = [
    ("no index (seq scan)", None),
    (
        "seed: partial index on not_after",
        f"CREATE INDEX idx_cert_not_after ON Certificate(not_after) {PREDICATE}",
    ),
    (
        "covering partial index (schema.sql)",
        f"CREATE INDEX idx_cert_not_after ON Certificate(not_after) INCLUDE (id, name) {PREDICATE}",
    ),
]


def measure(conn: psycopg.Connection[tuple[object, ...]], runs: int) -> tuple[str, float, float, int]:
    plan = [row[0] for row in conn.execute("EXPLAIN (ANALYZE, TIMING OFF) " + QUERY, (THRESHOLD,))]
    node = str(plan[0]).split("  (")[0]
    for _ in range(2):  # warm the cache
        conn.execute(QUERY, (THRESHOLD,)).fetchall()
    server: list[float] = []
    client: list[float] = []
    rows = 0
    for _ in range(runs):
        explained = [row[0] for row in conn.execute("EXPLAIN (ANALYZE, TIMING OFF) " + QUERY, (THRESHOLD,))]
        server.append(float(next(line for line in explained if "Execution Time" in str(line)).split()[2]))
        start = time.perf_counter()
        rows = len(conn.execute(QUERY, (THRESHOLD,)).fetchall())
        client.append((time.perf_counter() - start) * 1000)
    return node, statistics.median(server), statistics.median(client), rows


def _secondary_indexes(conn: psycopg.Connection[tuple[object, ...]]) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of Certificate's indexes that back no constraint (the primary key stays)."""
    rows = conn.execute(
        "SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
        " WHERE x.indrelid = 'certificate'::regclass AND NOT EXISTS"
        " (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid) ORDER BY i.relname"
    ).fetchall()
    return [(str(name), str(definition)) for name, definition in rows]


def fill(url: str, rows: int, pem_bytes: int, parts: int = 2) -> None:
    """The rows, by ``parts`` connections at once (one range of ``g`` each): the server's backends on both cores."""

    def part(number: int) -> None:
        first, last = rows * number // parts + 1, rows * (number + 1) // parts
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(FILL, {"first": first, "last": last, "pem_bytes": pem_bytes})

    with ThreadPoolExecutor(max_workers=parts) as pool:
        list(pool.map(part, range(parts)))


def run(url: str, rows: int, runs: int, pem_bytes: int) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS certreconcile_bench WITH (FORCE)")
        admin.execute("CREATE DATABASE certreconcile_bench")
    bench_url = psycopg.conninfo.make_conninfo(url, dbname="certreconcile_bench")
    try:
        with psycopg.connect(bench_url, autocommit=True) as conn:
            upgrade(conn)
            conn.execute("DROP INDEX idx_cert_not_after")
            start = time.perf_counter()
            # The schema's other indexes on Certificate are built after the rows (one sort each), not
            # kept up to date row by row: the same table and indexes, in half the set-up time.
            others = _secondary_indexes(conn)
            for name, _definition in others:
                conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
            fill(bench_url, rows, pem_bytes)
            for _name, definition in others:
                conn.execute(definition)
            conn.execute("VACUUM ANALYZE Certificate")
            loaded = time.perf_counter() - start
            size = conn.execute("SELECT pg_size_pretty(pg_table_size('certificate'))").fetchone()
            in_window = conn.execute(f"SELECT count(*) FROM ({QUERY}) q", (THRESHOLD,)).fetchone()
            assert size is not None
            assert in_window is not None
            print(
                f"{rows:,} rows loaded in {loaded:.1f} s, table {size[0]}; "
                f"{in_window[0]:,} rows in the window ({100 * in_window[0] / rows:.1f}%)"
            )
            print(f"median of {runs} runs\n")
            header = f"{'variant':<38} {'plan':<52} {'server ms':>9} {'client ms':>9}"
            print(header)
            print("-" * len(header))
            for label, ddl in VARIANTS:
                conn.execute("DROP INDEX IF EXISTS idx_cert_not_after")
                if ddl is not None:
                    conn.execute(ddl)
                conn.execute("VACUUM ANALYZE Certificate")
                node, server_ms, client_ms, _count = measure(conn, runs)
                print(f"{label:<38} {node:<52} {server_ms:>9.1f} {client_ms:>9.1f}")
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier("certreconcile_bench"))
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--pem-bytes", type=int, default=700, help="size of the stored PEM per row")
    parser.add_argument("--url", help="an admin URL; default: a temporary embedded PostgreSQL")
    args = parser.parse_args()
    if args.url:
        run(args.url, args.rows, args.runs, args.pem_bytes)
        return
    with tempfile.TemporaryDirectory(prefix="crbench") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "pg")
        try:
            run(server.ensure_running(), args.rows, args.runs, args.pem_bytes)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
