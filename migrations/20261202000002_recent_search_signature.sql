-- Tenant-wide search's first phase walks the tenant's newest messages in the recency
-- index alone, by signature (as in-contact search walks the transcript index): the
-- index carries each message's signature, so only messages that may match are read.
CREATE INDEX messages_tenant_recent_sig_idx ON messages (tenant_id, created_at DESC, id DESC)
    INCLUDE (search_sig_a, search_sig_b);
DROP INDEX messages_tenant_recent_idx;
ALTER INDEX messages_tenant_recent_sig_idx RENAME TO messages_tenant_recent_idx;
