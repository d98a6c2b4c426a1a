"""Faults injected mid-apply: run by a files target's ``reload_command`` (no shell), between the
certificate being stored and its deployment being recorded. Each fault fires once (a marker file),
so the next apply runs clean. Not a test module: ``python fault_inject.py MODE MARKER [ARGS]``.

Modes:
  terminate MARKER              pg_terminate_backend every certreconcile connection of the database
                                (CERTRECONCILE_DATABASE_URL, inherited from the apply)
  restart MARKER STATE_DIR      stop and start the EmbeddedPostgres in STATE_DIR
  hold MARKER NAME SECONDS      another session holds the Certificate rows of NAME FOR UPDATE for
                                SECONDS (in the background); returns once they are held
  down MARKER                   fail (a target whose server is down) while MARKER exists
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def _once(marker: Path) -> bool:
    if marker.exists():
        return False
    marker.write_text("fired\n")
    return True


def _terminate() -> None:
    import psycopg

    with psycopg.connect(os.environ["CERTRECONCILE_DATABASE_URL"], autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = 'certreconcile' AND datname = current_database() AND pid <> pg_backend_pid()"
        )


def _restart(state_dir: Path) -> None:
    from certreconcile.actual.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(state_dir)
    server.stop()
    server.ensure_running()


def _holder(marker: Path, name: str, seconds: float) -> None:
    import psycopg

    with psycopg.connect(os.environ["CERTRECONCILE_DATABASE_URL"]) as conn:
        conn.execute("SELECT 1 FROM Certificate WHERE name = %s FOR UPDATE", (name,))
        marker.with_suffix(".held").write_text("held\n")
        time.sleep(seconds)
        conn.commit()
    marker.with_suffix(".released").write_text("released\n")


def _hold(marker: Path, name: str, seconds: str) -> None:
    subprocess.Popen(
        [sys.executable, __file__, "holder", str(marker), name, seconds],
        start_new_session=True,
        stdin=subprocess.DEVNULL,  # not the apply's pipes: it would wait for the holder to close them
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    held = marker.with_suffix(".held")
    deadline = time.monotonic() + 30
    while not held.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def main(mode: str, marker: Path, *args: str) -> int:
    if mode == "down":
        if marker.exists():
            print("target down: connection refused", file=sys.stderr)
            return 1
        return 0
    if mode == "holder":
        _holder(marker, args[0], float(args[1]))
        return 0
    if not _once(marker):
        return 0
    if mode == "terminate":
        _terminate()
    elif mode == "restart":
        _restart(Path(args[0]))
    elif mode == "hold":
        _hold(marker, args[0], args[1])
    else:
        raise SystemExit(f"unknown fault {mode}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:]))
