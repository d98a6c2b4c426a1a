-- certreconcile migration 0003: `kms rewrap` audits every data key it moves to another KMS (key_rewrapped).
ALTER TABLE CertAudit DROP CONSTRAINT chk_audit_action;
ALTER TABLE CertAudit ADD CONSTRAINT chk_audit_action CHECK (
    action IN ('issued','renewed','revoked','distributed','verified','retired','failed','key_accessed',
               'key_rewrapped')
);
