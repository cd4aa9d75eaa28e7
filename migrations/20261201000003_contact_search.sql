-- In-contact search ("newest 50 messages of this contact matching"): one GIN index over
-- the contact and the lexemes answers both conditions at once, so a word that is common
-- overall but not within this contact no longer means scanning the contact's whole
-- history or intersecting with every message that has the word. btree_gin is a trusted
-- contrib extension (PostgreSQL 13+): a database owner may create it.
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX messages_contact_search_idx ON messages USING gin (contact_id, search);
