-- SMS through Twilio: a second provider for channel accounts. Common columns stay; what a
-- provider needs beyond them is a validated per-provider configuration
-- (`provider_config`: for Twilio the account SID and the webhook URL configured there,
-- which signatures cover). For Twilio, `phone_number_id` holds the sender (an E.164
-- number or a Messaging Service SID) and the auth token is the secret that both
-- authenticates sends and keys webhook signatures.
ALTER TABLE channel_accounts DROP CONSTRAINT channel_accounts_provider_check;
ALTER TABLE channel_accounts ADD CONSTRAINT channel_accounts_provider_check
    CHECK (provider IN ('whatsapp', 'twilio_sms'));
ALTER TABLE channel_accounts ADD COLUMN provider_config jsonb NOT NULL DEFAULT '{}'
    CONSTRAINT channel_accounts_provider_config_object CHECK (jsonb_typeof(provider_config) = 'object');
