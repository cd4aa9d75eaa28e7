-- The interaction router: agent states, offers (each attempt to give an interaction to an
-- agent, kept apart from the interaction itself).
CREATE TABLE agent_states (
    user_id          uuid PRIMARY KEY CONSTRAINT agent_states_user_fk REFERENCES users (id) ON DELETE CASCADE,
    tenant_id        uuid NOT NULL CONSTRAINT agent_states_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    state            text NOT NULL DEFAULT 'offline' CONSTRAINT agent_states_state_check CHECK (state IN
                         ('ready', 'not_ready', 'not_responding', 'after_work', 'offline')),
    reason           text,
    since            timestamptz NOT NULL DEFAULT now(),
    -- Longest idle first: when the agent last got an interaction (or became ready).
    idle_since       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX agent_states_ready_idx ON agent_states (tenant_id, idle_since) WHERE state = 'ready';

CREATE TABLE offers (
    id             uuid PRIMARY KEY,
    tenant_id      uuid NOT NULL CONSTRAINT offers_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    interaction_id uuid NOT NULL CONSTRAINT offers_interaction_fk REFERENCES interactions (id) ON DELETE CASCADE,
    agent_id       uuid NOT NULL CONSTRAINT offers_agent_fk REFERENCES users (id) ON DELETE CASCADE,
    state          text NOT NULL DEFAULT 'pending' CONSTRAINT offers_state_check CHECK (state IN
                       ('pending', 'accepted', 'declined', 'timed_out', 'rescinded')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    decided_at     timestamptz
);
-- Never two live offers for one interaction.
CREATE UNIQUE INDEX offers_one_pending_key ON offers (interaction_id) WHERE state = 'pending';
CREATE INDEX offers_expiry_idx ON offers (expires_at) WHERE state = 'pending';
CREATE INDEX offers_agent_idx ON offers (agent_id) WHERE state = 'pending';
CREATE INDEX interactions_queued_idx ON interactions (created_at) WHERE state = 'queued';
CREATE INDEX interactions_agent_idx ON interactions (agent_id) WHERE state IN ('offered', 'active', 'ended');
