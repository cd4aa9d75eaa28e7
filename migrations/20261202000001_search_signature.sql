-- In-contact search walks the contact's messages newest first in the transcript index
-- alone: each message's lexemes are summarised in a 128-bit signature (see
-- conversation_store::search::Signature) carried by the index, and only messages whose
-- signature covers the query's are read and checked. Its cost then follows the contact's
-- history, not how common the word is across the whole table (which the GIN
-- intersection pays). Rows stored before this carry every bit (-1): always read and
-- checked, never missed.
ALTER TABLE messages
    ADD COLUMN search_sig_a bigint NOT NULL DEFAULT -1,
    ADD COLUMN search_sig_b bigint NOT NULL DEFAULT -1;
CREATE INDEX messages_contact_time_sig_idx ON messages (tenant_id, contact_id, created_at, id)
    INCLUDE (search_sig_a, search_sig_b);
DROP INDEX messages_contact_time_idx;
ALTER INDEX messages_contact_time_sig_idx RENAME TO messages_contact_time_idx;
