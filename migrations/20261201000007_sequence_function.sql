-- The sequencer's round as one call: the advisory lock, the watermark, then the append,
-- returning the events it gave positions to (as the feed reads them), so the process that
-- sequenced them hands them to its sockets without reading them back. From the
-- application these were five round trips (BEGIN, the lock, the watermark, the append,
-- COMMIT) and then the feed's read, on every wake-up, each waiting its turn on a loaded
-- database, and every event waited for them before reaching a socket.
--
-- The steps stay separate statements inside the function: under READ COMMITTED each takes
-- a snapshot of its own, so the watermark is read after the lock is held and sees what the
-- previous holder committed (one statement would take its snapshot before the lock).
-- The watermark is passed on as values so the scan of `events_xid_idx` starts at it.
CREATE FUNCTION parley_sequence_events()
RETURNS TABLE (stream_position bigint, tenant_id uuid, audience text, user_id uuid, kind text,
               payload jsonb, created_at timestamptz)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    w_xid xid8;
    w_id  bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(7315001) THEN
        RETURN;
    END IF;
    SELECT through_xid, through_id INTO w_xid, w_id FROM event_sequencer;
    -- Above the watermark and below the oldest running transaction, in (xid, id) order:
    -- appended to the stream after the newest position (or the newest pruned one), and
    -- the watermark moved to the last one taken.
    RETURN QUERY
    WITH base AS (SELECT GREATEST(COALESCE((SELECT max(position) FROM event_stream), 0),
                                  COALESCE((SELECT max(pruned_through_position) FROM event_prune_marks), 0)) AS p),
         ready AS (
           SELECT r.*, row_number() OVER (ORDER BY r.xid, r.id) AS rn FROM (
               SELECT e.id, e.tenant_id, e.xid, e.audience, e.user_id, e.kind, e.payload,
                      e.created_at
               FROM events e
               WHERE (e.xid, e.id) > (w_xid, w_id)
                 AND e.xid < pg_snapshot_xmin(pg_current_snapshot())
               ORDER BY e.xid, e.id LIMIT 5000) r),
         appended AS (
           INSERT INTO event_stream (position, event_id, tenant_id)
           SELECT base.p + ready.rn, ready.id, ready.tenant_id FROM ready, base
           RETURNING 1),
         moved AS (
           UPDATE event_sequencer SET through_xid = last.xid, through_id = last.id
           FROM (SELECT xid, id FROM ready ORDER BY rn DESC LIMIT 1) AS last
           RETURNING 1)
    -- What was appended (the same rows and positions), read from `ready` rather than
    -- joined back to `events`.
    SELECT base.p + ready.rn, ready.tenant_id, ready.audience, ready.user_id, ready.kind,
           ready.payload, ready.created_at
    FROM ready, base
    ORDER BY ready.rn;
END
$$;
