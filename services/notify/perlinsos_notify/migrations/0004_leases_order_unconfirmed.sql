-- Notify under a bad provider.
-- seq: decision order (the order decisions were consumed; one participant's decisions
--   arrive in order on one partition). A message is sent only when every earlier message
--   of the same participant is settled.
-- lease_from: when the current owner handed the message to the provider (or a reconciler
--   took it over). NULL while a claim waits in its instance's queue: a live instance's
--   queued claim is never taken over; a handed-over one is, once the lease has run out.
-- unconfirmed_since: when the send became ambiguous (no answer) and the provider's list
--   has not confirmed or denied it since; surfaced to operators after a while.
ALTER TABLE messages
    ADD COLUMN seq               bigserial,
    ADD COLUMN lease_from        timestamptz,
    ADD COLUMN unconfirmed_since timestamptz;

CREATE INDEX messages_participant_open ON messages (participant_id, seq)
    WHERE status IN ('pending', 'sending');
CREATE INDEX messages_unconfirmed ON messages (unconfirmed_since)
    WHERE unconfirmed_since IS NOT NULL;

-- Who acted, for operator actions (`perlinsos notify resend`) in a message's history.
ALTER TABLE message_attempts ADD COLUMN actor text;
