-- Channel accounts (the tenant's side of a channel), the outbound outbox, idempotency
-- keys for agent sends, and dead letters for signed webhooks that could not be parsed.

CREATE TABLE channel_accounts (
    id                   uuid PRIMARY KEY,
    tenant_id            uuid NOT NULL CONSTRAINT channel_accounts_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    provider             text NOT NULL CONSTRAINT channel_accounts_provider_check CHECK (provider IN ('whatsapp')),
    name                 text NOT NULL,
    phone_number_id      text NOT NULL,
    waba_id              text,
    display_phone_number text,
    -- Secrets: write-only through the API, never logged.
    access_token         text NOT NULL,
    app_secret           text NOT NULL,
    verify_token         text NOT NULL,
    api_base_url         text NOT NULL,
    mark_read            boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT channel_accounts_phone_number_key UNIQUE (tenant_id, provider, phone_number_id)
);
CREATE INDEX channel_accounts_tenant_idx ON channel_accounts (tenant_id, id);

CREATE TABLE outbox (
    id                 bigserial PRIMARY KEY,
    tenant_id          uuid NOT NULL CONSTRAINT outbox_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    message_id         uuid NOT NULL CONSTRAINT outbox_message_key UNIQUE
                       CONSTRAINT outbox_message_fk REFERENCES messages (id) ON DELETE CASCADE,
    channel_account_id uuid NOT NULL CONSTRAINT outbox_account_fk REFERENCES channel_accounts (id) ON DELETE CASCADE,
    -- Messages to one recipient leave in order.
    recipient          text NOT NULL,
    request            jsonb NOT NULL,
    state              text NOT NULL DEFAULT 'pending' CONSTRAINT outbox_state_check CHECK (state IN ('pending', 'done', 'failed')),
    attempts           integer NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    -- A claimed row is leased; an expired lease (a crashed worker) makes it claimable again.
    locked_until       timestamptz,
    last_error         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_due_idx ON outbox (next_attempt_at, id) WHERE state = 'pending';
CREATE INDEX outbox_recipient_idx ON outbox (channel_account_id, recipient, id) WHERE state = 'pending';

CREATE TABLE idempotency_keys (
    tenant_id       uuid NOT NULL CONSTRAINT idempotency_keys_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL,
    key             text NOT NULL,
    request_hash    text NOT NULL,
    response_status integer,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id, key)
);

CREATE TABLE webhook_dead_letters (
    id                 bigserial PRIMARY KEY,
    tenant_id          uuid NOT NULL CONSTRAINT webhook_dead_letters_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    channel_account_id uuid NOT NULL,
    reason             text NOT NULL,
    body               bytea NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_dead_letters_tenant_idx ON webhook_dead_letters (tenant_id, id);

-- Provider error 131047 (re-engagement required) closes the 24-hour window in the data.
ALTER TABLE channel_identities ADD COLUMN window_closed_at timestamptz;
