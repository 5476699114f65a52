-- The rows still to publish, by id, in a narrow table of their own. The relay deleted
-- nothing and marked each row it published with `published_at`: an UPDATE of a row of
-- 1-2 KB (the event) writes the whole row again (a new tuple version in the table and in
-- the WAL, a dead one for vacuum), and reading the batch FOR UPDATE wrote a lock into
-- each wide row as well. Now an outbox row is written once and kept as it is; its id
-- waits here until published or refused, and publishing it deletes those 8 bytes.
-- `replay` puts the ids of published rows back. No foreign key: its check would lock
-- the outbox row of every id inserted.
CREATE TABLE outbox_pending (id bigint PRIMARY KEY);
INSERT INTO outbox_pending (id)
SELECT id FROM outbox WHERE published_at IS NULL AND refused_at IS NULL;
DROP INDEX outbox_unpublished;
-- Published: not pending and not refused (retention keeps rows by `created_at` now).
ALTER TABLE outbox DROP COLUMN published_at;
