-- The liveness key of the process that leased an outbox row: when that process is gone
-- (its session advisory lock released), another takes the row over at once instead of
-- waiting for the lease to expire.
ALTER TABLE outbox ADD COLUMN locked_by integer;
