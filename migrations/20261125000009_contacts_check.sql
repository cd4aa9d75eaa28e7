-- Some providers still offer the On-Premises contacts check (POST /v1/contacts); when an
-- account has one, Validate asks it.
ALTER TABLE channel_accounts ADD COLUMN contacts_check_url text;
