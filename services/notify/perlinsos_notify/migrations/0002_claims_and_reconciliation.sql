-- Crash-safe sending: a message is claimed ('sending', with an attempt token and the
-- claiming instance) and committed before the provider is called; the outcome is written
-- afterwards, guarded by the token. A 'sending' row whose instance died, whose claim is
-- older than the lease, or whose provider call got no answer is reconciled with the
-- provider's message list before anything is sent again.
ALTER TABLE messages DROP CONSTRAINT messages_status_check;
ALTER TABLE messages ADD CONSTRAINT messages_status_check
    CHECK (status IN ('pending', 'sending', 'accepted', 'failed', 'undeliverable'));

ALTER TABLE messages
    ADD COLUMN attempt_token    uuid,
    ADD COLUMN claimed_by       text,
    ADD COLUMN claimed_at       timestamptz,
    ADD COLUMN first_claimed_at timestamptz,
    ADD COLUMN next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN provider_status  text,
    ADD COLUMN error_code       text,
    ADD COLUMN reconciled       boolean     NOT NULL DEFAULT false,
    ADD COLUMN accepted_at      timestamptz,
    -- `perlinsos notify status NIK`: a pseudonym of the NIK and its masked form, never the NIK
    ADD COLUMN nik_hash         text,
    ADD COLUMN nik_masked       text;

DROP INDEX messages_pending;
CREATE INDEX messages_due ON messages (next_attempt_at) WHERE status IN ('pending', 'sending');
CREATE INDEX messages_nik ON messages (nik_hash) WHERE nik_hash IS NOT NULL;

-- Every provider answer (or reconciliation finding), for operators.
CREATE TABLE message_attempts (
    id          bigserial   PRIMARY KEY,
    message_id  text        NOT NULL REFERENCES messages (message_id),
    attempt     int         NOT NULL,
    outcome     text        NOT NULL,  -- the message status the answer led to
    http_status int,
    error       text,
    reconciled  boolean     NOT NULL DEFAULT false,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX message_attempts_message ON message_attempts (message_id);
