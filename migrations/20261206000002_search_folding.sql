-- Search folds case and accents, matches prefixes and parts of numbers, and handles
-- scripts without spaces (see conversation_store::search). Messages record which
-- analysis their `search` column and signature come from; rows of an older one are
-- analysed again by the gateway in the background (messages::reindex_stale), newest
-- first, and until then are found as before (their lexemes were lower-cased words).
ALTER TABLE messages ADD COLUMN search_version smallint NOT NULL DEFAULT 1;
ALTER TABLE messages ALTER COLUMN search_version SET DEFAULT 2;
CREATE INDEX messages_search_stale_idx ON messages (created_at DESC, id)
    WHERE search_version < 2;

-- Contacts: the name and attribute values folded the same way, for the directory's
-- and the Communication tab's search (substrings, trigram-indexed). NULL until the
-- background pass fills it for contacts stored before this.
ALTER TABLE contacts ADD COLUMN search_text text;
CREATE INDEX contacts_search_trgm_idx ON contacts USING gin (search_text gin_trgm_ops);
CREATE INDEX contacts_search_stale_idx ON contacts (id) WHERE search_text IS NULL;
