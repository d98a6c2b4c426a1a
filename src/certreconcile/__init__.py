"""certreconcile: a declarative GitOps reconciler for TLS certificates.

Importing this package does no I/O. The stages are ``load_desired`` → ``build_plan`` →
``apply_plan``; :class:`CertificateManager` is the seed's Python interface over them
(``from certreconcile import CertificateManager``: imported on first use, not with the package).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from certreconcile.errors import CertReconcileError

if TYPE_CHECKING:
    from certreconcile.manager import CertificateManager, CertificateRecord

    __version__: str  # resolved on first use from the installed distribution (see __getattr__)

__all__ = ["CertReconcileError", "CertificateManager", "CertificateRecord", "__version__"]

#: Exported names imported lazily (the facade pulls in the engine, the executor and the plug-ins).
_LAZY = {"CertificateManager": "certreconcile.manager", "CertificateRecord": "certreconcile.manager"}


def _installed_version() -> str:
    """The installed distribution's version (set from git tags at build time), or ``0+unknown``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("certreconcile")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value = _installed_version()
        globals()[name] = value
        return value
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'certreconcile' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
