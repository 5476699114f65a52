-- Fewer indexes on `messages`. Every change of a message's status (pending -> sending ->
-- accepted) writes a new version of the row and an entry in each of its indexes, so each
-- index costs three entries per SMS.
-- * `decision_id` needs no unique index of its own: the message id is made from the
--   decision id (`sms-<decision_id>`, handlers.message_id_for), so the primary key already
--   makes a redelivered decision a no-op (the insert's ON CONFLICT DO NOTHING).
-- * One index on (participant_id, seq) serves both the claim's check for an earlier open
--   message of the same participant (it was a partial index of its own) and an operator's
--   lookup of one participant's messages in decision order.
ALTER TABLE messages DROP CONSTRAINT messages_decision_id_key;
CREATE INDEX messages_participant_seq ON messages (participant_id, seq);
DROP INDEX messages_participant;
DROP INDEX messages_participant_open;
-- No foreign key from an attempt to its message: its check looked the message up and
-- locked it again for every attempt row written. Attempts are written only from the rows
-- the outcome UPDATE returned, or by a resend holding its message FOR UPDATE, and no
-- message is ever deleted.
ALTER TABLE message_attempts DROP CONSTRAINT message_attempts_message_id_fkey;
