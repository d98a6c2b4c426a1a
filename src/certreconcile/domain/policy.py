"""Enumerations of declaration choices shared by the desired and the actual state."""

from __future__ import annotations

import enum

__all__ = ["Challenge", "OnDelete", "Origin", "RevocationReason"]


class Challenge(enum.StrEnum):
    HTTP_01 = "http-01"
    DNS_01 = "dns-01"


class OnDelete(enum.StrEnum):
    RETIRE = "retire"  # stop managing; keep the certificate and its history
    REVOKE = "revoke"  # revoke at the CA, then stop managing


class Origin(enum.StrEnum):
    """Who owns a managed certificate (``Certificate.origin``)."""

    GIT = "git"  # declared in the desired state: removing the declaration retires or revokes it
    API = "api"  # issued through the CertificateManager facade: an apply that does not declare it leaves it alone
    IMPORTED = "imported"  # adopted by `certreconcile import` (issued elsewhere); owned like GIT: declared


class RevocationReason(enum.IntEnum):
    """RFC 5280 CRLReason codes, named as the RFC writes them (``--reason keyCompromise``)."""

    unspecified = 0
    keyCompromise = 1
    cACompromise = 2
    affiliationChanged = 3
    superseded = 4
    cessationOfOperation = 5
    certificateHold = 6
    removeFromCRL = 8
    privilegeWithdrawn = 9
    aACompromise = 10

    @classmethod
    def parse(cls, text: str) -> RevocationReason:
        """A reason by its RFC name (any case) or number; ValueError listing the names otherwise."""
        for member in cls:
            if text.strip().lower() in (member.name.lower(), str(member.value)):
                return member
        raise ValueError(f"{text!r} is not an RFC 5280 revocation reason; use one of: {', '.join(m.name for m in cls)}")
