-- A row the broker refuses for itself, deterministically (a record larger than the
-- broker or the producer accepts): the relay sets these instead of `published_at` and
-- moves on, so one such row cannot stop every row behind it. `perlinsos outbox refused`
-- lists them; `perlinsos outbox retry ID` queues one again (after the limit is raised).
ALTER TABLE outbox ADD COLUMN refused_at timestamptz;
ALTER TABLE outbox ADD COLUMN refusal text;
