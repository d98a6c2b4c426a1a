"""Kept for the importers of :func:`local_kms_key_file`; each kind's factory lives in its kind module."""

from __future__ import annotations

from certreconcile.plugins.kms.local_config import local_kms_key_file

__all__ = ["local_kms_key_file"]
