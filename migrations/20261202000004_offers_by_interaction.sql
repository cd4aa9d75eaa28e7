-- The router asks, for every queued interaction and every candidate agent, whether that
-- agent has already declined it or let it time out. Offers were indexed only while
-- pending, so the question read every offer ever made. (The index also serves the cascade
-- when an interaction is deleted.)
CREATE INDEX offers_interaction_idx ON offers (interaction_id, agent_id);
