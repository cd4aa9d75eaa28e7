-- A message's interaction is no longer checked by a foreign key. Every message is written
-- with an interaction found (or created) in the same transaction, scoped to its tenant
-- and contact, which the key could not check anyway (it checked only that some
-- interaction had that id). Interactions are deleted only with their contact, which
-- deletes its messages too (`messages_contact_fk`), so the key's `ON DELETE SET NULL`
-- never acted. The check was a lookup and a row lock per message: with
-- `EXPLAIN ANALYZE` on a 50-message insert under load, 1.0-1.1 ms of a 4.6-5.9 ms
-- statement (the contact's key, which does guard against a contact deleted meanwhile,
-- took 1.2 ms and stays).
ALTER TABLE messages DROP CONSTRAINT messages_interaction_fk;
