-- The sender claims due `pending` rows in (next_attempt_at, seq) order, a batch at a
-- time: with this index the claim reads the first rows in that order and stops at its
-- limit, however many rows wait (it read and sorted every pending row: at 24,000 pending
-- after a burst, half a second a claim).
CREATE INDEX messages_claimable ON messages (next_attempt_at, seq) WHERE status = 'pending';
