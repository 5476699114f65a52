-- The inbox keys on (source, id), as CloudEvents makes them unique together: two agencies
-- may use the same event ids. Rows recorded before this migration keep source '' and are
-- still matched on their id alone (see inbox.claim), so nothing applied is applied again.
ALTER TABLE inbox ADD COLUMN source text NOT NULL DEFAULT '';
ALTER TABLE inbox DROP CONSTRAINT inbox_pkey;
ALTER TABLE inbox ADD PRIMARY KEY (source, event_id);
ALTER TABLE inbox ALTER COLUMN source DROP DEFAULT;

-- A row here stops the service's outbox relays from publishing (while a broker that lost
-- its topics is rebuilt); `replay` deletes it. At most one row.
CREATE TABLE outbox_hold (
    held   boolean     PRIMARY KEY DEFAULT true CHECK (held),
    reason text        NOT NULL,
    since  timestamptz NOT NULL DEFAULT now()
);
