"""Paths in declarations: a relative path is relative to the desired-state directory."""

from __future__ import annotations

from pathlib import Path

__all__ = ["declared_path", "optional_declared_path"]


def declared_path(value: str | Path, base_dir: Path) -> Path:
    """``value`` as written when absolute, else resolved under ``base_dir``."""
    path = Path(value)
    return path if path.is_absolute() else (base_dir / path).resolve()


def optional_declared_path(value: str | Path | None, base_dir: Path) -> Path | None:
    """:func:`declared_path`, or ``None`` for an absent (or empty) value."""
    return declared_path(value, base_dir) if value else None
