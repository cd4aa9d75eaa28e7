-- When a contact last wrote, as the 24-hour customer-service window counts it: the
-- provider's timestamp for the message, but never later than the database's clock (a
-- skewed sender clock must not stretch the window), and the clock itself when the
-- provider gave none. One definition for every statement that moves `last_inbound_at`,
-- on the database's clock like the window's checks. A single-SELECT SQL function: the
-- planner inlines it, so the statements run as they did with the expression written out.
CREATE FUNCTION parley_inbound_at(sent_at timestamptz) RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT LEAST(now(), COALESCE(sent_at, now())) $$;
