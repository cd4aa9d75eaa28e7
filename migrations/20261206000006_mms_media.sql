-- An MMS carries up to ten media: a message may have several downloads (one per
-- provider media reference) instead of one.
ALTER TABLE media_downloads DROP CONSTRAINT media_downloads_message_key;
ALTER TABLE media_downloads ADD CONSTRAINT media_downloads_message_media_key UNIQUE (message_id, media_id);
