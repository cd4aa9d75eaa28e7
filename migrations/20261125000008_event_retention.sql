-- Events are kept for a configurable time. A client resuming from before what was pruned
-- is told to resync (close code 4002) instead of silently missing events.
CREATE TABLE event_prune_marks (
    tenant_id               uuid PRIMARY KEY CONSTRAINT event_prune_marks_tenant_fk REFERENCES tenants (id) ON DELETE CASCADE,
    pruned_through_position bigint NOT NULL
);
CREATE INDEX events_created_idx ON events (created_at) WHERE position IS NOT NULL;
