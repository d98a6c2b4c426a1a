"""The ``status`` table and JSON: presentation of the actual state."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import certreconcile
from certreconcile.actual.model import ActualCertificate, ActualState
from certreconcile.desired.model import CertificateSpec
from certreconcile.domain.policy import Origin
from certreconcile.domain.status import CertStatus
from certreconcile.plan.plan import Change, Plan
from certreconcile.plan.policies import renewal_time

__all__ = ["StatusFlags", "named_flags", "render_status_json", "render_status_table", "status_flags"]

#: The STATUS of a declared name that has no certificate yet (its issuance is pending).
NOT_ISSUED = "not-issued"

#: Without a declaration to compute the renewal time from, this close to expiry counts as soon.
SOON_WITHOUT_DECLARATION = 7  # days


@dataclass(frozen=True, slots=True)
class StatusFlags:
    """What an operator should look at for one certificate."""

    renewal_due_at: datetime | None  # from the declaration (and ARI window); None when not declared
    expiring_soon: bool  # renewal is due (or it expired)
    expired: bool
    unverified_targets: tuple[str, ...]  # declared or pushed targets not proven to serve it
    open_rotation_since: datetime | None
    declared: bool | None  # None: the declarations could not be read
    pending: tuple[str, ...] = ()  # actions the plan holds for it (issue, rotate ...): not served as declared yet
    next_attempt_at: datetime | None = None  # a pending change waits for its backoff until then
    owner: Origin = Origin.GIT  # 'api': issued through the CertificateManager facade (apply leaves it alone)

    @property
    def labels(self) -> tuple[str, ...]:
        labels = []
        if self.expired:
            labels.append("expired")
        elif self.expiring_soon:
            labels.append("expiring-soon")
        if self.unverified_targets:
            labels.append("unverified:" + ",".join(self.unverified_targets))
        if self.open_rotation_since is not None:
            labels.append("rotation-open")
        if self.pending:
            labels.append("pending")
        if self.next_attempt_at is not None:
            labels.append(f"next-attempt:{self.next_attempt_at.astimezone(UTC):%Y-%m-%dT%H:%MZ}")
        if self.owner is Origin.API:
            labels.append("owner:api")  # not declared, and no apply retires it
        elif self.declared is False:
            labels.append("not-declared")
        return tuple(labels)


def _pending(changes: Sequence[Change]) -> tuple[tuple[str, ...], datetime | None]:
    """The planned actions of one name, and when the first deferred one is tried next."""
    waits = [change.deferred_until for change in changes if change.deferred_until is not None]
    return tuple(change.action.value for change in changes), min(waits) if waits else None


def status_flags(
    cert: ActualCertificate,
    spec: CertificateSpec | None,
    now: datetime,
    *,
    declared: bool | None,
    changes: Sequence[Change] = (),
) -> StatusFlags:
    expired = cert.not_after <= now or cert.status is CertStatus.EXPIRED
    due = renewal_time(spec, cert) if spec is not None else None
    if due is not None:
        soon = now >= due
    else:
        soon = cert.status is CertStatus.EXPIRING_SOON or _days_left(cert, now) < SOON_WITHOUT_DECLARATION
    targets = set(cert.distributions) | (set(spec.targets) if spec is not None else set())
    unverified = tuple(
        sorted(
            target
            for target in targets
            if (d := cert.distributions.get(target)) is None
            or d.verified_at is None
            or d.fingerprint != cert.fingerprint
        )
    )
    rotation = cert.open_rotation.triggered_at if cert.open_rotation is not None else None
    return StatusFlags(due, soon or expired, expired, unverified, rotation, declared, *_pending(changes))


def _unissued_flags(spec: CertificateSpec, changes: Sequence[Change]) -> StatusFlags:
    """A declared name without any certificate: every target unverified, its issuance pending."""
    return StatusFlags(None, False, False, tuple(sorted(spec.targets)), None, True, *_pending(changes))


_RED, _YELLOW, _GREEN, _RESET = "\x1b[31m", "\x1b[33m", "\x1b[32m", "\x1b[0m"


def _days_left(cert: ActualCertificate, now: datetime) -> int:
    return int((cert.not_after - now).total_seconds() // 86400)


def _verified(cert: ActualCertificate) -> tuple[int, int]:
    total = len(cert.distributions)
    ok = sum(1 for d in cert.distributions.values() if d.verified_at is not None and d.fingerprint == cert.fingerprint)
    return ok, total


def _changes(plan: Plan | None, name: str) -> tuple[Change, ...]:
    return tuple(change for change in plan.changes if change.name == name) if plan is not None else ()


def _flags(
    cert: ActualCertificate, specs: Mapping[str, CertificateSpec] | None, now: datetime, plan: Plan | None
) -> StatusFlags:
    spec = specs.get(cert.name) if specs is not None else None
    declared = None if specs is None else spec is not None
    flags = status_flags(cert, spec, now, declared=declared, changes=_changes(plan, cert.name))
    return replace(flags, owner=cert.origin)


def _unissued(
    actual: ActualState, specs: Mapping[str, CertificateSpec] | None, plan: Plan | None
) -> list[tuple[CertificateSpec, StatusFlags]]:
    """Declared names the plan would issue that have no certificate yet (a failed first issuance)."""
    if specs is None or plan is None:
        return []
    names = sorted({change.name for change in plan.changes} - set(actual.certificates))
    return [(specs[name], _unissued_flags(specs[name], _changes(plan, name))) for name in names if name in specs]


def _flag_fields(flags: StatusFlags) -> dict[str, Any]:
    return {
        "flags": list(flags.labels),
        "renewal_due_at": flags.renewal_due_at.isoformat() if flags.renewal_due_at else None,
        "expiring_soon": flags.expiring_soon,
        "unverified_targets": list(flags.unverified_targets),
        "open_rotation_since": flags.open_rotation_since.isoformat() if flags.open_rotation_since is not None else None,
        "owner": flags.owner.value,
        "pending": list(flags.pending),
        "next_attempt_at": flags.next_attempt_at.isoformat() if flags.next_attempt_at is not None else None,
    }


def render_status_json(
    actual: ActualState,
    now: datetime,
    specs: Mapping[str, CertificateSpec] | None = None,
    plan: Plan | None = None,
) -> str:
    """Every managed certificate; with ``plan``, also each name's pending changes and declared names not issued."""
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
                **_flag_fields(_flags(cert, specs, now, plan)),
            }
        )
    for spec, flags in _unissued(actual, specs, plan):
        empty = dict.fromkeys(("serial_number", "fingerprint", "not_before", "not_after", "days_left"))
        identity = {"name": spec.name, "domains": list(spec.domains), "issuer": spec.issuer, "status": NOT_ISSUED}
        counts = {"targets": {}, "targets_verified": 0, "targets_total": 0}
        rows.append({**identity, **empty, **counts, **_flag_fields(flags)})
    rows.sort(key=lambda row: str(row["name"]))
    from certreconcile.cli.status_agents import agents_json

    document = {"format_version": 1, "version": certreconcile.__version__, "serial": actual.meta.serial,
                "certificates": rows, "agents": agents_json(actual, now, plan)}  # fmt: skip
    return json.dumps(document, indent=2, sort_keys=True)


def _table_rows(
    actual: ActualState, now: datetime, specs: Mapping[str, CertificateSpec] | None, plan: Plan | None
) -> list[tuple[tuple[str, ...], StatusFlags]]:
    rows = []
    for cert in actual.certificates.values():
        ok, total = _verified(cert)
        flags = _flags(cert, specs, now, plan)
        domains = cert.domains[0] + (f" (+{len(cert.domains) - 1})" if len(cert.domains) > 1 else "")
        cells = (cert.name, domains, cert.issuer, cert.status.value, cert.not_after.strftime("%Y-%m-%d %H:%M"),
                 str(_days_left(cert, now)), f"{ok}/{total}", " ".join(flags.labels) or "-")  # fmt: skip
        rows.append((cells, flags))
    for spec, flags in _unissued(actual, specs, plan):
        domains = spec.domains[0] + (f" (+{len(spec.domains) - 1})" if len(spec.domains) > 1 else "")
        rows.append(((spec.name, domains, spec.issuer, NOT_ISSUED, "-", "-", "0/0", " ".join(flags.labels)), flags))
    return sorted(rows, key=lambda row: row[0][0])


def named_flags(
    actual: ActualState, now: datetime, specs: Mapping[str, CertificateSpec] | None = None, plan: Plan | None = None
) -> list[tuple[str, StatusFlags]]:
    """The flags of every row ``status`` shows (certificates, then declared names not issued), by name."""
    return [(cells[0], flags) for cells, flags in _table_rows(actual, now, specs, plan)]


def render_status_table(
    actual: ActualState,
    now: datetime,
    *,
    color: bool,
    specs: Mapping[str, CertificateSpec] | None = None,
    plan: Plan | None = None,
) -> str:
    """The inventory table; with ``plan``, pending changes are flagged and declared names not issued listed."""
    from certreconcile.cli.status_agents import agents_table

    table = _table_rows(actual, now, specs, plan)
    if not table:
        return (
            "No certificates are managed yet. Run `certreconcile plan` to see what apply would issue.\n"
            + agents_table(actual, now, plan)
        )
    header = ("NAME", "DOMAINS", "ISSUER", "STATUS", "NOT AFTER", "DAYS LEFT", "TARGETS VERIFIED", "FLAGS")
    rows = [cells for cells, _ in table]
    all_flags = [flags for _, flags in table]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(header)).rstrip()]
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        if color:
            days = int(row[5]) if row[5] != "-" else -1
            shade = _RED if days < 7 else _YELLOW if days < 30 else _GREEN
            cells[5] = f"{shade}{cells[5]}{_RESET}"
            if row[6].split("/")[0] != row[6].split("/")[1]:
                cells[6] = f"{_YELLOW}{cells[6]}{_RESET}"
            if row[7] != "-":
                cells[7] = f"{_YELLOW}{cells[7]}{_RESET}"
        lines.append("  ".join(cells).rstrip())
    summary = [
        f"{count} {what}"
        for count, what in (
            (sum(1 for f in all_flags if f.expiring_soon), "expiring soon or expired"),
            (sum(1 for f in all_flags if f.unverified_targets), "with unverified targets"),
            (sum(1 for f in all_flags if f.open_rotation_since is not None), "with an open rotation"),
            (sum(1 for f in all_flags if f.pending), "with pending changes"),
            (sum(1 for f in all_flags if f.next_attempt_at is not None), "waiting for a retry"),
        )
        if count
    ]
    lines.append("")
    lines.append(("Attention: " + ", ".join(summary) + ".") if summary else "All certificates are fine.")
    return "\n".join(lines) + "\n" + agents_table(actual, now, plan)
