-- Tenant-wide search ("the newest 50 messages matching"): for a common word the planner
-- walks the tenant's messages newest first and stops at 50 matches; for a rare word it
-- uses the GIN index. Without this index a common word meant reading every match.
CREATE INDEX messages_tenant_recent_idx ON messages (tenant_id, created_at DESC, id DESC);
