-- certreconcile migration 0020: a certificate's renewal info (ARI) is deleted when it is superseded.
--
-- Nobody asks the CA about a superseded certificate again, and nothing reads its stored window, but its
-- AcmeRenewalInfo row stayed: the table grew by one row per renewal. The current-row query (load_actual,
-- every `plan` and every cycle of `run`) joins the table and PostgreSQL hashes all of it: in the simulated
-- year of bench/simulate.py (10,000 certificates) it held 83,658 rows at day 250, of which 9,941 were of
-- live certificates, and the query took 60 ms on the server against 30 ms with those rows alone.
-- A trigger, as the schema owner (SECURITY DEFINER, as the audit chain's): every path to 'superseded' is
-- covered, and the apply role needs no DELETE on the table.
CREATE FUNCTION acmerenewalinfo_drop_superseded() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp  -- the schema lives in public; pg_temp last: no shadowing
AS $$
BEGIN
    DELETE FROM AcmeRenewalInfo WHERE cert_id = NEW.id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER certificate_superseded_drops_renewal_info AFTER UPDATE OF status ON Certificate
    FOR EACH ROW WHEN (NEW.status = 'superseded' AND OLD.status <> 'superseded')
    EXECUTE FUNCTION acmerenewalinfo_drop_superseded();

DELETE FROM AcmeRenewalInfo a USING Certificate c WHERE c.id = a.cert_id AND c.status = 'superseded';
