"""The one error root of certreconcile.

Every error a user can see carries a stable kebab-case ``code`` (for scripts and
search), a one-line ``message`` (what went wrong) and a ``hint`` (what to do).
Every code is listed, with its default hint, in :mod:`certreconcile.error_codes`.
Third-party exceptions are wrapped with ``raise ... from exc``; their text is never
shown when it could carry a secret.

    CertReconcileError
    ├── ConfigError                 bad settings or environment
    ├── DesiredStateError           the declarations are invalid (carries Diagnostics)
    ├── StateError                  the database: connection, migration, integrity
    │   └── StalePlanError          a saved plan was built on an older state
    ├── KmsError                    encryption or decryption of a key failed
    ├── IssuerError                 the CA refused or failed to issue or revoke
    │   └── DnsError                a DNS-01 record could not be published, seen or removed
    ├── TargetError                 a deployment or its verification failed
    │   ├── VerificationFailed      a new certificate is not verified on its targets (rotation left open)
    │   └── TargetFailed            a distribution failed on some targets (``failures``: target → error)
    ├── PolicyViolation             a name outside policy.allowed_domains, or over a CA budget
    └── ApplyError                  one or more changes of an apply failed
"""

from __future__ import annotations

import os

__all__ = [
    "ApplyError",
    "CertReconcileError",
    "ConfigError",
    "DesiredStateError",
    "DnsError",
    "IssuerError",
    "KmsError",
    "NotifyError",
    "PolicyViolation",
    "StalePlanError",
    "StateError",
    "TargetError",
    "TargetFailed",
    "UnregisteredCodeError",
    "VerificationFailed",
]

#: Set to 1 (the tests do) to make an error with a code missing from ``error_codes.REGISTRY`` fail at once.
CHECK_CODES_ENV = "CERTRECONCILE_CHECK_ERROR_CODES"


class UnregisteredCodeError(AssertionError):
    """An error was made with a code the registry does not list (checked with CERTRECONCILE_CHECK_ERROR_CODES=1)."""


def _check_registered(code: str) -> None:
    # Imported here, not at the top: the package imports this module, and `python -m certreconcile.error_codes`
    # must not find error_codes imported before it runs.
    from certreconcile.error_codes import is_registered

    if not is_registered(code):
        raise UnregisteredCodeError(f"error code {code!r} is not in certreconcile.error_codes: register it")


class CertReconcileError(Exception):
    """Root of every error certreconcile raises on purpose."""

    default_code = "certreconcile-error"

    def __init__(self, message: str, *, code: str | None = None, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.hint = hint
        if os.environ.get(CHECK_CODES_ENV) == "1":
            _check_registered(self.code)

    def one_line(self) -> str:
        """``error[code]: message (hint)``: the only form shown to users."""
        text = f"error[{self.code}]: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class ConfigError(CertReconcileError):
    default_code = "config-invalid"


class DesiredStateError(CertReconcileError):
    """Raised with every diagnostic found, never only the first."""

    default_code = "desired-state-invalid"

    def __init__(self, diagnostics: list[object], message: str = "the desired state is invalid") -> None:
        super().__init__(message, hint="fix the errors listed above, then run `certreconcile validate`")
        self.diagnostics = diagnostics


class StateError(CertReconcileError):
    default_code = "state-error"


class StalePlanError(StateError):
    default_code = "stale-plan"


class KmsError(CertReconcileError):
    default_code = "kms-error"


class IssuerError(CertReconcileError):
    default_code = "issuer-error"


class DnsError(IssuerError):
    default_code = "dns-error"


class TargetError(CertReconcileError):
    default_code = "target-error"


class TargetFailed(TargetError):
    """Deploying to some targets failed; ``failures`` maps each failed target to its error (one line)."""

    default_code = "distribution-failed"

    def __init__(self, message: str, failures: dict[str, str], *, code: str | None = None, hint: str = "") -> None:
        super().__init__(message, code=code, hint=hint)
        self.failures = dict(failures)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(sorted(self.failures))


class VerificationFailed(TargetFailed):
    """A new certificate was issued but not verified on every target: its rotation stays open."""

    default_code = "verification-failed"

    def __init__(
        self, message: str, failures: dict[str, str], *, cert_id: str, code: str | None = None, hint: str = ""
    ) -> None:
        super().__init__(message, failures, code=code, hint=hint)
        self.cert_id = cert_id


class NotifyError(CertReconcileError):
    """A notification could not be sent (it is retried with backoff: :mod:`certreconcile.notify`)."""

    default_code = "notify-failed"


class PolicyViolation(CertReconcileError):
    """A request the policy refuses (a name outside policy.allowed_domains, a CA budget exceeded)."""

    default_code = "domain-not-allowed"


class ApplyError(CertReconcileError):
    default_code = "apply-failed"
