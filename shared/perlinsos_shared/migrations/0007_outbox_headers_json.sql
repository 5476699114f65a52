-- An outbox row's headers (content type, trace context) are written once and read back
-- whole by the relay: `json` (the text, validated) instead of `jsonb`, which decomposes
-- every value and sorts its keys at each insert.
ALTER TABLE outbox
    ALTER COLUMN headers DROP DEFAULT,
    ALTER COLUMN headers TYPE json USING headers::json,
    ALTER COLUMN headers SET DEFAULT '{}'::json;
