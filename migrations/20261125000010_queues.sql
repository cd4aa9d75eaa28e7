-- Queues, Not Ready reason codes, presence, and the history of every interaction state
-- change (who, when) for reports.
CREATE TABLE queues (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL CONSTRAINT queues_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    name               text NOT NULL,
    -- Channels the queue takes; empty takes every channel.
    channels           text[] NOT NULL DEFAULT '{}',
    -- Skills an agent needs; after relax_after_secs of waiting, relaxable_skills are dropped.
    skills             text[] NOT NULL DEFAULT '{}',
    relax_after_secs   integer CONSTRAINT queues_relax_check CHECK (relax_after_secs > 0),
    relaxable_skills   text[] NOT NULL DEFAULT '{}',
    offer_timeout_secs integer NOT NULL DEFAULT 30 CONSTRAINT queues_offer_timeout_check CHECK (offer_timeout_secs BETWEEN 1 AND 3600),
    wrap_up_codes      text[] NOT NULL DEFAULT '{}',
    -- Whether an ended (not Done) interaction still counts against the agent's capacity.
    ended_counts       boolean NOT NULL DEFAULT true,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT queues_name_key UNIQUE (tenant_id, name)
);

ALTER TABLE channel_accounts
    ADD COLUMN default_queue_id uuid CONSTRAINT channel_accounts_queue_fk REFERENCES queues (id) ON DELETE SET NULL;

ALTER TABLE interactions
    ADD COLUMN queue_id uuid CONSTRAINT interactions_queue_fk REFERENCES queues (id) ON DELETE SET NULL,
    -- When it (last) joined a queue: queue position and skill relaxation count from here.
    ADD COLUMN queued_at timestamptz NOT NULL DEFAULT now(),
    -- A transfer to a named agent: only that agent is offered it.
    ADD COLUMN transfer_to uuid CONSTRAINT interactions_transfer_fk REFERENCES users (id) ON DELETE SET NULL;
DROP INDEX interactions_queued_idx;
CREATE INDEX interactions_queued_idx ON interactions (queued_at, id) WHERE state = 'queued';

CREATE TABLE not_ready_reasons (
    tenant_id  uuid NOT NULL CONSTRAINT not_ready_reasons_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    code       text NOT NULL,
    label      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, code)
);

-- Presence: refreshed while the agent has an event-stream socket on any replica.
ALTER TABLE agent_states ADD COLUMN last_seen_at timestamptz;

-- Every interaction state change. The actor comes from the transaction-local setting
-- parley.actor (a user id, or `contact` / `system`), set by whoever changes the state.
CREATE TABLE interaction_history (
    id             bigserial PRIMARY KEY,
    tenant_id      uuid NOT NULL CONSTRAINT interaction_history_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    interaction_id uuid NOT NULL CONSTRAINT interaction_history_interaction_fk REFERENCES interactions (id) ON DELETE CASCADE,
    state          text NOT NULL,
    agent_id       uuid,
    actor          text NOT NULL,
    at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX interaction_history_interaction_idx ON interaction_history (interaction_id, id);
CREATE INDEX interaction_history_tenant_at_idx ON interaction_history (tenant_id, at);

CREATE FUNCTION record_interaction_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO interaction_history (tenant_id, interaction_id, state, agent_id, actor)
    VALUES (NEW.tenant_id, NEW.id, NEW.state, NEW.agent_id,
            COALESCE(NULLIF(current_setting('parley.actor', true), ''), 'system'));
    RETURN NULL;
END $$;
CREATE TRIGGER interactions_history_insert AFTER INSERT ON interactions
    FOR EACH ROW EXECUTE FUNCTION record_interaction_state();
CREATE TRIGGER interactions_history_update AFTER UPDATE OF state, agent_id ON interactions
    FOR EACH ROW WHEN (OLD.state IS DISTINCT FROM NEW.state OR OLD.agent_id IS DISTINCT FROM NEW.agent_id)
    EXECUTE FUNCTION record_interaction_state();

-- Backfill what is known for interactions that predate the history.
INSERT INTO interaction_history (tenant_id, interaction_id, state, agent_id, actor, at)
SELECT tenant_id, id, state, agent_id, 'system', updated_at FROM interactions;
