-- certreconcile migration 0005: the recent-issuance history read by every plan (Let's Encrypt budgets).
--
-- load_actual reads the certificates created in the last 7 days (joined to their ACME order).
-- Without this index that is a sequential scan of every certificate ever issued (300k rows:
-- ~140 ms); with it, an index range scan of the week's rows (a few ms).
CREATE INDEX idx_cert_created_at ON Certificate(created_at);
