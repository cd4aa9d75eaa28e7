-- The event stream's order. An event's `id` comes from a sequence when its transaction
-- inserts it, but transactions commit out of id order, so a reader paging by `id` can
-- skip an event that commits late. A sequencer gives each event a `position` once every
-- transaction that could still insert an earlier one has finished (its `xid` is below the
-- oldest running transaction), in (xid, id) order. Positions only ever grow, and a client
-- that resumes after position P gets every later event exactly once.
ALTER TABLE events ADD COLUMN position bigint;
CREATE UNIQUE INDEX events_position_key ON events (position);
CREATE INDEX events_tenant_position_idx ON events (tenant_id, position) WHERE position IS NOT NULL;
CREATE INDEX events_unsequenced_idx ON events (xid, id) WHERE position IS NULL;
