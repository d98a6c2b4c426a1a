"""How every target is verified after a deployment: the settings common to all target kinds.

``verify`` (HOST:PORT of a TLS handshake), ``sni`` and ``verify_timeout`` are declared next to
the kind key of each target (``edge: {nginx: {...}, verify: ...}``) and reach the adapter
through :func:`verification`; their one default timeout is
:data:`certreconcile.desired.model.DEFAULT_VERIFY_TIMEOUT`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

from certreconcile.desired.model import DEFAULT_VERIFY_TIMEOUT, TargetSpec

__all__ = ["DEFAULT_VERIFY_TIMEOUT", "Verification", "verification"]


class Verification(TypedDict):
    """The keyword arguments every target adapter takes for its verification."""

    verify: str | None
    verify_timeout: timedelta
    sni: str | None


def verification(spec: TargetSpec) -> Verification:
    return Verification(verify=spec.verify, verify_timeout=spec.verify_timeout, sni=spec.sni)
