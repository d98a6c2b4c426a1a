"""The results of ``certreconcile check``, and their text and JSON forms."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass

from certreconcile.errors import CertReconcileError

__all__ = ["CheckOutcome", "CheckReport", "CheckResult", "attempt", "failed"]


class CheckOutcome(enum.StrEnum):
    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"  # nothing to check (no check available, not used by this issuer kind)


@dataclass(frozen=True, slots=True)
class CheckResult:
    subject: str  # "certificate shop", "kms local", "dns_provider corp-dns", "target web", "issuer le"
    check: str  # "dns-01 _acme-challenge.shop.example.com", "credentials", "test command", "staging order"
    outcome: CheckOutcome
    message: str  # one line, never a secret
    code: str | None = None  # the error code of a failure
    hint: str | None = None

    def as_json(self) -> dict[str, str | None]:
        return {"subject": self.subject, "check": self.check, "outcome": self.outcome.value,
                "message": self.message, "code": self.code, "hint": self.hint}  # fmt: skip


def failed(subject: str, check: str, exc: CertReconcileError) -> CheckResult:
    return CheckResult(subject, check, CheckOutcome.FAILED, exc.message, exc.code, exc.hint)


def attempt(subject: str, check: str, action: Callable[[], str]) -> CheckResult:
    """Run one check: ok with what it says, or failed with the error's own message and code."""
    try:
        return CheckResult(subject, check, CheckOutcome.OK, action())
    except CertReconcileError as exc:
        return failed(subject, check, exc)
    except Exception as exc:  # noqa: BLE001 - a plug-in bug fails its own check, never the others
        return CheckResult(subject, check, CheckOutcome.FAILED, f"{type(exc).__name__} (a bug in the plug-in)",
                           "check-crashed")  # fmt: skip


@dataclass(frozen=True, slots=True)
class CheckReport:
    results: tuple[CheckResult, ...]

    @property
    def ok(self) -> bool:
        return all(result.outcome is not CheckOutcome.FAILED for result in self.results)

    def count(self, outcome: CheckOutcome) -> int:
        return sum(1 for result in self.results if result.outcome is outcome)

    def as_json(self) -> str:
        payload = {
            "format_version": 1,
            "ok": self.ok,
            "results": [result.as_json() for result in self.results],
            "summary": {outcome.value: self.count(outcome) for outcome in CheckOutcome},
        }
        return json.dumps(payload, indent=2, sort_keys=True)

    def as_text(self) -> str:
        """One table per subject: the check, its outcome, what it found (a failure: the error line and hint)."""
        lines: list[str] = []
        subjects = list(dict.fromkeys(result.subject for result in self.results))
        width = max((len(result.check) for result in self.results), default=0)
        for subject in subjects:
            lines.append(subject)
            for result in (r for r in self.results if r.subject == subject):
                text = result.message
                if result.outcome is CheckOutcome.FAILED:
                    text = f"error[{result.code}]: {text}" + (f" ({result.hint})" if result.hint else "")
                lines.append(f"  {result.check:<{width}}  {result.outcome.value:<7}  {text}")
        failed = self.count(CheckOutcome.FAILED)
        lines.append(
            f"check: {self.count(CheckOutcome.OK)} passed, {failed} failed, {self.count(CheckOutcome.SKIPPED)} skipped"
        )
        return "\n".join(lines) + "\n"
