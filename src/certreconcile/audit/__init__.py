"""The audit trail's tamper evidence: the hash chain over CertAudit and its verifier.

``chain``: the hash of one row (the Python twin of the database's trigger);
``verify``: walks the chain and reports the first changed, deleted or reordered row;
``head``: the head file exported by ``audit verify --export-head`` and checked by ``--head``.
"""
