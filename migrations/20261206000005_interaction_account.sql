-- Interactions record the channel account they came in on: the router finds the
-- account's default queue, and an agent's reply its account, without scanning the
-- interaction's messages. Open interactions of earlier releases are filled from their
-- first message that names an account (done ones keep NULL: nothing routes them again).
ALTER TABLE interactions ADD COLUMN channel_account_id uuid
    CONSTRAINT interactions_channel_account_fk REFERENCES channel_accounts (id) ON DELETE SET NULL;
UPDATE interactions i SET channel_account_id = (
    SELECT m.channel_account_id FROM messages m
    WHERE m.tenant_id = i.tenant_id AND m.interaction_id = i.id AND m.channel_account_id IS NOT NULL
    ORDER BY m.created_at, m.id LIMIT 1)
WHERE i.state <> 'done';
CREATE INDEX interactions_contact_account_idx ON interactions (tenant_id, contact_id, channel, created_at DESC)
    WHERE channel_account_id IS NOT NULL;
