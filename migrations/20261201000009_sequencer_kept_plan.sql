-- The sequencer's function planned its statement anew on every call (its watermark, as
-- values, makes a plan for the values look cheaper than one kept for any): about half of
-- the call at one or two events a round, which is every round under light load. The kept
-- plan reads `events_xid_idx` from the watermark like the planned one; without the values
-- PostgreSQL guesses a third of `events` above the watermark, so sequential scans are
-- ruled out in the function lest that guess choose one over a large table. The plan is
-- made again whenever the tables' statistics change.
ALTER FUNCTION parley_sequence_events() SET plan_cache_mode = force_generic_plan;
ALTER FUNCTION parley_sequence_events() SET enable_seqscan = off;
