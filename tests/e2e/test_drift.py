"""Drift: a target changed by hand is found by ``--refresh`` and fixed by apply."""

from __future__ import annotations

import shutil
from pathlib import Path

from e2e.conftest import Runner

ROOT = Path(__file__).resolve().parents[2]


def test_refresh_plans_redistribute_for_exactly_the_drifted_target(run_cli: Runner, tmp_path: Path) -> None:
    desired = tmp_path / "desired"
    shutil.copytree(ROOT / "examples" / "desired-state", desired, ignore=shutil.ignore_patterns(".certreconcile"))
    d = str(desired)
    run_cli("apply", "--dir", d, "--auto-approve", check_code=0)
    deploy = desired / ".certreconcile" / "deploy"
    # api goes to both web and internal; replace it on web only with another certificate.
    shutil.copy(deploy / "web" / "shop" / "fullchain.pem", deploy / "web" / "api" / "fullchain.pem")
    assert run_cli("plan", "--dir", d, "--detailed-exitcode").returncode == 0  # without probing, nothing seen
    drift = run_cli("plan", "--dir", d, "--refresh", "--detailed-exitcode", check_code=2)
    assert "> redistribute api" in drift.stdout
    assert "Plan: 0 to issue, 0 to rotate, 0 to revoke, 1 to redistribute." in drift.stdout
    assert "web serves" in drift.stdout
    # What it serves (shop's certificate) beside what it should (api's): fingerprint, serial, expiry.
    from certreconcile.domain.certs import read_cert_facts

    shop = read_cert_facts((deploy / "web" / "shop" / "cert.pem").read_text())
    api = read_cert_facts((deploy / "internal" / "api" / "cert.pem").read_text())
    served_line = next(line for line in drift.stdout.splitlines() if "served:" in line)
    assert f"sha256 {shop.fingerprint[:16]}, serial {shop.serial_number[:20]}" in served_line
    assert f"should serve sha256 {api.fingerprint[:16]}, serial {api.serial_number[:20]}" in served_line
    assert f"expires {api.not_after:%Y-%m-%d}" in served_line
    assert "internal" not in drift.stdout.split("> redistribute api")[1].split("targets:")[1].splitlines()[0]
    saved = tmp_path / "drift.json"
    run_cli("plan", "--dir", d, "--refresh", "--out", str(saved), check_code=0)
    run_cli("apply", str(saved), "--dir", d, check_code=0)
    assert run_cli("plan", "--dir", d, "--refresh", "--detailed-exitcode").returncode == 0
    # And apply --refresh finds and fixes drift by itself.
    shutil.copy(deploy / "web" / "shop" / "fullchain.pem", deploy / "web" / "api" / "fullchain.pem")
    fixed = run_cli("apply", "--dir", d, "--auto-approve", "--refresh", check_code=0)
    assert "> api: done" in fixed.stdout
    assert run_cli("plan", "--dir", d, "--refresh", "--detailed-exitcode").returncode == 0
