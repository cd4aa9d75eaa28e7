-- Dead letters are kept per message (the rest of a webhook is stored) and can be replayed
-- by an admin once the cause is fixed. The same body is kept once: a webhook the provider
-- sends again (after a 503) records nothing twice.
ALTER TABLE webhook_dead_letters ADD COLUMN replayed_at timestamptz;
DELETE FROM webhook_dead_letters d
 USING webhook_dead_letters e
 WHERE d.tenant_id = e.tenant_id AND d.channel_account_id = e.channel_account_id
   AND sha256(d.body) = sha256(e.body) AND d.id > e.id;
CREATE UNIQUE INDEX webhook_dead_letters_body_key
    ON webhook_dead_letters (tenant_id, channel_account_id, sha256(body));

-- A provider's text is kept whole (WhatsApp delivers up to 65,536 characters); agents'
-- sends are still held to each channel's own limit before they are queued.
ALTER TABLE messages DROP CONSTRAINT messages_body_length;
ALTER TABLE messages ADD CONSTRAINT messages_body_length CHECK (char_length(body) <= 65536) NOT VALID;

-- Emails are stored in the one spelling they are looked up and throttled by (lowercase;
-- the gateway normalises what people type the same way).
UPDATE users SET email = lower(email) WHERE email <> lower(email);

-- Routing that never stalls: an agent who handed an interaction to a queue is offered it
-- again only after everyone else (and once Ready anew), like one who declined it.
ALTER TABLE interactions ADD COLUMN transferred_by uuid, ADD COLUMN transferred_at timestamptz;
-- Each tenant's queue is read apart (one tenant's backlog never hides another's).
CREATE INDEX interactions_tenant_queued_idx ON interactions (tenant_id, queued_at, id) WHERE state = 'queued';

-- When a replica saw an agent's last event-stream socket close (cleared by any live
-- socket's next presence tick): such an agent gets no new offers.
ALTER TABLE agent_states ADD COLUMN socket_lost_at timestamptz;

-- Sessions: a login's refresh token (its SHA-256 only), rotated on every refresh and
-- revoked by logout or a password change; access tokens name their session (`sid`).
CREATE TABLE sessions (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL CONSTRAINT sessions_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    user_id        uuid NOT NULL CONSTRAINT sessions_user_fk REFERENCES users (id) ON DELETE CASCADE,
    refresh_sha256 bytea NOT NULL CONSTRAINT sessions_refresh_key UNIQUE,
    -- The one it replaced: presented again, the session is revoked (a copy is about).
    previous_refresh_sha256 bytea,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    refreshed_at   timestamptz,
    revoked_at     timestamptz
);
CREATE INDEX sessions_previous_idx ON sessions (previous_refresh_sha256);
CREATE INDEX sessions_user_idx ON sessions (tenant_id, user_id) WHERE revoked_at IS NULL;
-- Access tokens issued before this (a password change) are no longer accepted.
ALTER TABLE users ADD COLUMN tokens_valid_after timestamptz;

-- A chat nobody writes in for this long is ended by the system (capacity freed).
ALTER TABLE queues ADD COLUMN inactivity_timeout_secs integer
    CONSTRAINT queues_inactivity_timeout_check CHECK (inactivity_timeout_secs BETWEEN 1 AND 2592000);

-- An email is unique within its tenant, not across the platform: a tenant's admin must
-- not learn (from a 409) that an address has an account in another tenant. Login finds
-- every account with the address and lets in the one whose password matches.
DROP INDEX users_email_key;
CREATE UNIQUE INDEX users_email_key ON users (tenant_id, lower(email));
CREATE INDEX users_login_idx ON users (lower(email));

-- A contact who wrote STOP (or another opt-out word) is `opted_out`: nothing more is sent
-- until they write again.
ALTER TABLE channel_identities DROP CONSTRAINT channel_identities_status_check;
ALTER TABLE channel_identities ADD CONSTRAINT channel_identities_status_check CHECK (status IN
    ('unverified', 'connect_requested', 'connected', 'declined', 'invalid', 'opted_out'));

-- Files live in PostgreSQL by default, content-addressed per tenant: every replica serves
-- every file and backups take them along. (Files written to the disk by earlier versions
-- are read from there and copied in on first use.)
CREATE TABLE blobs (
    tenant_id  uuid NOT NULL CONSTRAINT blobs_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    sha256     text NOT NULL,
    bytes      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, sha256)
);
