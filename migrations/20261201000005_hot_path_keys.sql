-- Every message and every event checked its tenant foreign key, and each check takes a
-- key-share lock on the tenant's one row: with concurrent writers that row's lock becomes
-- a shared multixact, rewritten for every new writer. A message's tenant is its
-- contact's (it is written from the contact, and deleting a tenant still cascades through
-- its contacts to their messages); an event's tenant is the writer's principal's, and
-- events are pruned by age. So neither row needs the check.
ALTER TABLE messages DROP CONSTRAINT messages_tenant_fk;
ALTER TABLE events DROP CONSTRAINT events_tenant_fk;
