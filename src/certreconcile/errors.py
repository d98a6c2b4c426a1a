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
    "StalePlanError",
    "StateError",
    "TargetError",
    "UnregisteredCodeError",
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


class ApplyError(CertReconcileError):
    default_code = "apply-failed"
