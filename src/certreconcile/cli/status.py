"""The ``status`` table and JSON: presentation of the actual state."""

from __future__ import annotations

import json
from datetime import datetime

from certreconcile.actual.model import ActualCertificate, ActualState

__all__ = ["render_status_json", "render_status_table"]

_RED, _YELLOW, _GREEN, _RESET = "\x1b[31m", "\x1b[33m", "\x1b[32m", "\x1b[0m"


def _days_left(cert: ActualCertificate, now: datetime) -> int:
    return int((cert.not_after - now).total_seconds() // 86400)


def _verified(cert: ActualCertificate) -> tuple[int, int]:
    total = len(cert.distributions)
    ok = sum(1 for d in cert.distributions.values() if d.verified_at is not None and d.fingerprint == cert.fingerprint)
    return ok, total


def render_status_json(actual: ActualState, now: datetime) -> str:
    rows = []
    for cert in actual.certificates.values():
        ok, total = _verified(cert)
        rows.append(
            {
                "name": cert.name,
                "domains": list(cert.domains),
                "issuer": cert.issuer,
                "status": cert.status.value,
                "serial_number": cert.serial_number,
                "fingerprint": cert.fingerprint,
                "not_before": cert.not_before.isoformat(),
                "not_after": cert.not_after.isoformat(),
                "days_left": _days_left(cert, now),
                "targets": {
                    name: {
                        "fingerprint": d.fingerprint,
                        "verified_at": d.verified_at.isoformat() if d.verified_at else None,
                        "last_error": d.last_error,
                    }
                    for name, d in sorted(cert.distributions.items())
                },
                "targets_verified": ok,
                "targets_total": total,
            }
        )
    return json.dumps(
        {"format_version": 1, "serial": actual.meta.serial, "certificates": rows}, indent=2, sort_keys=True
    )


def render_status_table(actual: ActualState, now: datetime, *, color: bool) -> str:
    if not actual.certificates:
        return "No certificates are managed yet. Run `certreconcile plan` to see what apply would issue.\n"
    header = ("NAME", "DOMAINS", "ISSUER", "STATUS", "NOT AFTER", "DAYS LEFT", "TARGETS VERIFIED")
    rows = []
    for cert in actual.certificates.values():
        ok, total = _verified(cert)
        domains = cert.domains[0] + (f" (+{len(cert.domains) - 1})" if len(cert.domains) > 1 else "")
        rows.append(
            (
                cert.name,
                domains,
                cert.issuer,
                cert.status.value,
                cert.not_after.strftime("%Y-%m-%d %H:%M"),
                str(_days_left(cert, now)),
                f"{ok}/{total}",
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)).rstrip()]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        if color:
            days = int(row[5])
            shade = _RED if days < 7 else _YELLOW if days < 30 else _GREEN
            cells[5] = f"{shade}{cells[5]}{_RESET}"
            if row[6].split("/")[0] != row[6].split("/")[1]:
                cells[6] = f"{_YELLOW}{cells[6]}{_RESET}"
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
