"""Core cryptography used by the engine and by plug-ins alike.

``secret``: SecretBytes, EncryptionContext, WrappedKey and the Kms port;
``keys``: key generation, PEM and CSR building; ``envelope``: the KMS envelope (seal and open).
"""
