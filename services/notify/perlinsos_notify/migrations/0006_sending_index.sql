-- The reconciler's sweep for orphaned claims reads `sending` rows only. Through
-- messages_due (pending and sending together) it read every due pending message to find
-- them: at 400,000 pending, 140-300 ms a sweep, several sweeps a second. With an index of
-- their own it reads the rows in flight. Nothing else reads messages_due (the claim and
-- the next due time read messages_claimable), so it goes: one index less to write.
CREATE INDEX messages_sending ON messages (next_attempt_at) WHERE status = 'sending';
DROP INDEX messages_due;
