-- certreconcile migration 0016: the recent issuances (Let's Encrypt's budgets, read with every plan) join each
-- certificate of the window to its order by cert_id. Without an index the join scanned every order once per
-- certificate: 0.7 s at 10,000 certificates a month after their onboarding (532 recent issuances × 11,638
-- orders), growing with both; an index lookup each instead.
CREATE INDEX idx_acmeorder_cert ON AcmeOrder(cert_id);
