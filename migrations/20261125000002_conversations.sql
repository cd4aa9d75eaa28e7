-- The conversation store: contacts, their channel identities, interactions, messages,
-- attachments and the event log.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Names sort the way people expect in every language (Ángel before bob before Zoë):
-- ICU's root collation where the server has ICU, byte order otherwise.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu') THEN
        CREATE COLLATION parley_sort FROM "und-x-icu";
    ELSE
        CREATE COLLATION parley_sort FROM "C";
    END IF;
END
$$;

CREATE TABLE contacts (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL CONSTRAINT contacts_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    name             text NOT NULL,
    attributes       jsonb NOT NULL DEFAULT '{}'
                     CONSTRAINT contacts_attributes_object CHECK (jsonb_typeof(attributes) = 'object'),
    -- The newest message, for the Communication tab's ordering.
    last_activity_at timestamptz,
    -- Inbound messages up to and including this point have been read by an agent.
    read_up_to_at    timestamptz,
    read_up_to_id    uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contacts_tenant_idx ON contacts (tenant_id, id);
CREATE INDEX contacts_name_idx ON contacts (tenant_id, (name COLLATE parley_sort), id);
CREATE INDEX contacts_activity_idx ON contacts (tenant_id, last_activity_at DESC, id DESC)
    WHERE last_activity_at IS NOT NULL;
CREATE INDEX contacts_name_trgm_idx ON contacts USING gin (name gin_trgm_ops);

CREATE TABLE channel_identities (
    id              uuid PRIMARY KEY,
    tenant_id       uuid NOT NULL CONSTRAINT channel_identities_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    contact_id      uuid NOT NULL CONSTRAINT channel_identities_contact_fk REFERENCES contacts (id) ON DELETE CASCADE,
    channel         text NOT NULL CONSTRAINT channel_identities_channel_check CHECK (channel IN
                        ('whatsapp', 'sms', 'webchat', 'messenger', 'twitter', 'facebook_public', 'twitter_public')),
    address         text NOT NULL,
    -- WhatsApp: unverified → connect_requested → connected | declined; invalid with last_error.
    status          text NOT NULL DEFAULT 'unverified' CONSTRAINT channel_identities_status_check CHECK (status IN
                        ('unverified', 'connect_requested', 'connected', 'declined', 'invalid')),
    last_error      jsonb,
    consent         jsonb,
    last_inbound_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT channel_identities_address_key UNIQUE (tenant_id, channel, address)
);
CREATE INDEX channel_identities_contact_idx ON channel_identities (contact_id);
CREATE INDEX channel_identities_address_trgm_idx ON channel_identities USING gin (address gin_trgm_ops);

CREATE TABLE interactions (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL CONSTRAINT interactions_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    contact_id   uuid NOT NULL CONSTRAINT interactions_contact_fk REFERENCES contacts (id) ON DELETE CASCADE,
    channel      text NOT NULL,
    identity_id  uuid CONSTRAINT interactions_identity_fk REFERENCES channel_identities (id) ON DELETE SET NULL,
    state        text NOT NULL DEFAULT 'queued' CONSTRAINT interactions_state_check CHECK (state IN
                     ('queued', 'offered', 'active', 'ended', 'done')),
    agent_id     uuid CONSTRAINT interactions_agent_fk REFERENCES users (id) ON DELETE SET NULL,
    ended_by     text CONSTRAINT interactions_ended_by_check CHECK (ended_by IN ('contact', 'agent', 'system')),
    disposition  text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    accepted_at  timestamptz,
    ended_at     timestamptz,
    done_at      timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX interactions_contact_idx ON interactions (tenant_id, contact_id, created_at DESC);
-- At most one open (not done) interaction per contact and channel: concurrent inbound
-- messages attach to the same one.
CREATE UNIQUE INDEX interactions_open_key ON interactions (tenant_id, contact_id, channel)
    WHERE state <> 'done';

CREATE TABLE attachments (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL CONSTRAINT attachments_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    sha256      text NOT NULL,
    mime_type   text NOT NULL,
    size        bigint NOT NULL,
    width       integer,
    height      integer,
    filename    text,
    uploaded_by uuid CONSTRAINT attachments_uploader_fk REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX attachments_tenant_idx ON attachments (tenant_id, id);

CREATE TABLE messages (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL CONSTRAINT messages_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    contact_id          uuid NOT NULL CONSTRAINT messages_contact_fk REFERENCES contacts (id) ON DELETE CASCADE,
    interaction_id      uuid CONSTRAINT messages_interaction_fk REFERENCES interactions (id) ON DELETE SET NULL,
    channel             text NOT NULL,
    media               text NOT NULL CONSTRAINT messages_media_check CHECK (media IN ('chat', 'open_media')),
    direction           text NOT NULL CONSTRAINT messages_direction_check CHECK (direction IN ('inbound', 'outbound', 'system')),
    sender_user_id      uuid CONSTRAINT messages_sender_fk REFERENCES users (id) ON DELETE SET NULL,
    kind                text NOT NULL,
    body                text CONSTRAINT messages_body_length CHECK (char_length(body) <= 4096),
    payload             jsonb NOT NULL DEFAULT '{}',
    channel_account_id  uuid,
    provider_message_id text,
    reply_to_id         uuid,
    status              text NOT NULL,
    status_error        jsonb,
    -- Lexemes computed by the application (see conversation_store::search) so that every
    -- script and emoji is searchable without language-specific stemming.
    search              tsvector NOT NULL DEFAULT ''::tsvector,
    created_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT messages_provider_id_key UNIQUE (tenant_id, channel_account_id, provider_message_id)
);
-- The transcript (one contact, time order) and in-contact search.
CREATE INDEX messages_contact_time_idx ON messages (tenant_id, contact_id, created_at, id);
CREATE INDEX messages_search_idx ON messages USING gin (search);
CREATE INDEX messages_interaction_idx ON messages (interaction_id);

CREATE TABLE message_attachments (
    message_id    uuid NOT NULL CONSTRAINT message_attachments_message_fk REFERENCES messages (id) ON DELETE CASCADE,
    attachment_id uuid NOT NULL CONSTRAINT message_attachments_attachment_fk REFERENCES attachments (id),
    tenant_id     uuid NOT NULL,
    position      integer NOT NULL,
    PRIMARY KEY (message_id, position)
);

-- Everything an agent's desktop must learn about. The stream (resume by id, commit-safe
-- watermark by xid) is served by the gateway.
CREATE TABLE events (
    id          bigserial PRIMARY KEY,
    tenant_id   uuid NOT NULL CONSTRAINT events_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    -- 'tenant' (every user of the tenant), 'supervisors', or 'user' (only user_id).
    audience    text NOT NULL CONSTRAINT events_audience_check CHECK (audience IN ('tenant', 'supervisors', 'user')),
    user_id     uuid,
    kind        text NOT NULL,
    payload     jsonb NOT NULL,
    xid         xid8 NOT NULL DEFAULT pg_current_xact_id(),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_tenant_idx ON events (tenant_id, id);
