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

__all__ = ["CertReconcileError", "CertificateManager", "CertificateRecord", "__version__"]

__version__ = "0.1.0"

#: Exported names imported lazily (the facade pulls in the engine, the executor and the plug-ins).
_LAZY = {"CertificateManager": "certreconcile.manager", "CertificateRecord": "certreconcile.manager"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'certreconcile' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
