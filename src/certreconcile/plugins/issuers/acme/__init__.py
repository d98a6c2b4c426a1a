"""The ACME issuer (RFC 8555, RFC 9773 ARI): Let's Encrypt, Pebble, OpenBao PKI, step-ca.

This package's ``__init__`` stays light (no ``acme``/``josepy``/``requests`` import), so
``kms rewrap`` can name the account-key context without loading the protocol stack.
"""

from __future__ import annotations

from certreconcile.plugins.ports import EncryptionContext

__all__ = ["acme_account_context"]


def acme_account_context(directory_url: str) -> EncryptionContext:
    """The context binding an ACME account key to its AcmeAccount row (one account per directory)."""
    return EncryptionContext(table="AcmeAccount", row_id=directory_url, purpose="account-key")
