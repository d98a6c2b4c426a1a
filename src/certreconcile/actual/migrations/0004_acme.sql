-- certreconcile migration 0004: ACME issuance (orders bound to their key, ARI windows, budgets).

-- The Certificate id an order's key is sealed for (its KMS context), and the directory it
-- was placed with (per-account order budgets). No foreign key: the Certificate row is
-- inserted only when the order completes.
ALTER TABLE AcmeOrder ADD COLUMN cert_id UUID;
ALTER TABLE AcmeOrder ADD COLUMN directory_url TEXT;
CREATE INDEX idx_acmeorder_directory_created ON AcmeOrder(directory_url, created_at);

-- The ARI certificate id (RFC 9773 `replaces`) the order of this certificate named:
-- set only for renewals the CA accepted as such (exempt from Let's Encrypt's limits).
ALTER TABLE Certificate ADD COLUMN ari_replaces TEXT;

-- The renewal window an ACME CA suggested for a certificate (RFC 9773), and when to ask again.
CREATE TABLE AcmeRenewalInfo (
    cert_id         UUID PRIMARY KEY REFERENCES Certificate(id),
    window_start    TIMESTAMPTZ NOT NULL,
    window_end      TIMESTAMPTZ NOT NULL,
    explanation_url TEXT,
    retry_after     TIMESTAMPTZ NOT NULL,
    fetched_at      TIMESTAMPTZ NOT NULL,
    CONSTRAINT chk_ari_window CHECK (window_end >= window_start)
);

-- The declaration a backoff was earned under: a changed declaration resets it.
ALTER TABLE IssuanceBackoff ADD COLUMN declaration_digest TEXT;

-- AcmeOrder.key_ref was never written: an order's key is journalled (sealed) in ApplyStep
-- (`key-generated`), which `kms rewrap` already walks. One copy of a secret, not two.
ALTER TABLE AcmeOrder DROP COLUMN key_ref;
