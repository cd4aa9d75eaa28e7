-- Media that arrived with inbound messages, fetched from the provider into attachment
-- storage after the webhook is answered (the provider's URL lives minutes, the media id
-- about a week), retried with backoff.
CREATE TABLE media_downloads (
    id                 bigserial PRIMARY KEY,
    tenant_id          uuid NOT NULL CONSTRAINT media_downloads_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    message_id         uuid NOT NULL CONSTRAINT media_downloads_message_key UNIQUE
                       CONSTRAINT media_downloads_message_fk REFERENCES messages (id) ON DELETE CASCADE,
    channel_account_id uuid NOT NULL CONSTRAINT media_downloads_account_fk REFERENCES channel_accounts (id) ON DELETE CASCADE,
    media_id           text NOT NULL,
    mime_type          text,
    filename           text,
    state              text NOT NULL DEFAULT 'pending' CONSTRAINT media_downloads_state_check CHECK (state IN ('pending', 'done', 'failed')),
    attempts           integer NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz NOT NULL DEFAULT now(),
    locked_until       timestamptz,
    last_error         text,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX media_downloads_due_idx ON media_downloads (next_attempt_at, id) WHERE state = 'pending';
