-- Connect / Validate: the opt-in request template each WhatsApp account sends, and how
-- recent evidence of reachability must be.
ALTER TABLE channel_accounts
    ADD COLUMN optin_template_name     text NOT NULL DEFAULT 'parley_connect_optin',
    ADD COLUMN optin_template_language text NOT NULL DEFAULT 'en',
    ADD COLUMN evidence_days           integer NOT NULL DEFAULT 30
        CONSTRAINT channel_accounts_evidence_days_check CHECK (evidence_days BETWEEN 1 AND 365);
