-- An inbox row written with a dead letter (the message failed alone, deterministically)
-- rather than with the message applied. `perlinsos dlq redrive` deletes such a row before
-- sending the message again, and leaves alone one written when the message was applied:
-- redriving twice changes nothing.
ALTER TABLE inbox ADD COLUMN dead_lettered boolean NOT NULL DEFAULT false;
