-- Stream positions move out of `events` into a narrow table of their own. Setting a
-- position on the event row rewrote the whole row (payload included: a message's full
-- JSON) and, the position being indexed, added an entry to each of its five indexes, then
-- left the old row for vacuum; a fifth of the database's time under load. Now the
-- sequencer appends (position, event) rows and the event is written once.
--
-- Which events are ready is found without a marker on the event: every event up to the
-- watermark (xid, id) has a position, and the sequencer takes events above it whose
-- transaction is below the oldest running one (none of those can still insert), in
-- (xid, id) order, so the watermark only moves forward.
CREATE TABLE event_stream (
    position  bigint PRIMARY KEY,
    event_id  bigint NOT NULL,
    tenant_id uuid NOT NULL
);
CREATE INDEX event_stream_tenant_idx ON event_stream (tenant_id, position);

CREATE TABLE event_sequencer (
    one         boolean PRIMARY KEY DEFAULT true CONSTRAINT event_sequencer_one CHECK (one),
    through_xid xid8 NOT NULL,
    through_id  bigint NOT NULL
);

INSERT INTO event_stream (position, event_id, tenant_id)
SELECT position, id, tenant_id FROM events WHERE position IS NOT NULL;
INSERT INTO event_sequencer (through_xid, through_id)
SELECT COALESCE((SELECT xid FROM events WHERE position IS NOT NULL ORDER BY xid DESC, id DESC LIMIT 1), '0'::xid8),
       COALESCE((SELECT id FROM events WHERE position IS NOT NULL ORDER BY xid DESC, id DESC LIMIT 1), 0);

DROP INDEX events_created_idx;
DROP INDEX events_unsequenced_idx;
DROP INDEX events_tenant_position_idx;
DROP INDEX events_position_key;
-- Events are read through the stream (by position) or by id; nothing reads them by
-- tenant and id at scale.
DROP INDEX events_tenant_idx;
ALTER TABLE events DROP COLUMN position;
CREATE INDEX events_xid_idx ON events (xid, id);
