-- The outbox stores what to send, provider-neutral (parley_core::outbound::Outbound, with
-- its version `v`), and the provider's module renders the wire body at send time. Rows
-- queued by earlier releases keep their Cloud API body in `request` and are sent as they
-- are (a legacy path kept for one release), so nothing queued is lost across the upgrade.
ALTER TABLE outbox ADD COLUMN content jsonb;
ALTER TABLE outbox ALTER COLUMN request DROP NOT NULL;
ALTER TABLE outbox ADD CONSTRAINT outbox_content_or_request
    CHECK (content IS NOT NULL OR request IS NOT NULL) NOT VALID;
