"""Enumerations of declaration choices shared by the desired and the actual state."""

from __future__ import annotations

import enum

__all__ = ["Challenge", "OnDelete"]


class Challenge(enum.StrEnum):
    HTTP_01 = "http-01"
    DNS_01 = "dns-01"


class OnDelete(enum.StrEnum):
    RETIRE = "retire"  # stop managing; keep the certificate and its history
    REVOKE = "revoke"  # revoke at the CA, then stop managing
