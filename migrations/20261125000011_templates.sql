-- WhatsApp notification templates (kept in WhatsApp's component shape, with field
-- bindings for auto-fill) and standard responses.
CREATE TABLE templates (
    id                   uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL CONSTRAINT templates_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    -- The WhatsApp account it was synced from (NULL: written in Parley).
    channel_account_id   uuid CONSTRAINT templates_account_fk REFERENCES channel_accounts (id) ON DELETE SET NULL,
    name                 text NOT NULL,
    language             text NOT NULL,
    category             text NOT NULL CONSTRAINT templates_category_check CHECK (category IN ('marketing', 'utility', 'authentication')),
    status               text NOT NULL CONSTRAINT templates_status_check CHECK (status IN ('approved', 'pending', 'rejected', 'paused', 'disabled')),
    -- What the provider said last (its own words: APPROVED, IN_APPEAL, ...) and its id.
    provider_status      text,
    provider_template_id text,
    rejected_reason      text,
    -- false when the last sync did not find it at the provider; NULL when never synced.
    known_to_provider    boolean,
    components           jsonb NOT NULL,
    bindings             jsonb NOT NULL DEFAULT '{}',
    synced_at            timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT templates_name_key UNIQUE (tenant_id, name, language)
);

CREATE TABLE standard_responses (
    id         uuid PRIMARY KEY,
    tenant_id  uuid NOT NULL CONSTRAINT standard_responses_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    name       text NOT NULL,
    category   text,
    text       text NOT NULL,
    shortcut   text,
    bindings   jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT standard_responses_name_key UNIQUE (tenant_id, name),
    CONSTRAINT standard_responses_shortcut_key UNIQUE (tenant_id, shortcut)
);
