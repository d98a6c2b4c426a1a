"""certreconcile: a declarative GitOps reconciler for TLS certificates.

Importing this package does no I/O. The stages are ``load_desired`` → ``build_plan`` →
``apply_plan``; :class:`CertificateManager` is the seed's Python interface over them.
"""

from certreconcile.errors import CertReconcileError

__all__ = ["CertReconcileError", "__version__"]

__version__ = "0.1.0"
