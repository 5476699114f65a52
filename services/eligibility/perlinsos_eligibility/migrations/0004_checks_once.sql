-- The checks behind a participant's current state are those of the decision that put
-- them there: kept once, in `decisions`, which `decision_id` names. `participants.checks`
-- (the same 690 bytes again, in every row) is no longer written; rows decided before
-- this migration keep theirs there, and are read from there while `decision_id` is NULL.
ALTER TABLE participants ADD COLUMN decision_id text;
-- JSON only ever written and read back whole is kept as `json`, the text as sent,
-- validated, instead of `jsonb`, which decomposes every value and sorts its keys at
-- each insert. Nothing queries inside these columns; readers get the same values.
ALTER TABLE decisions
    ALTER COLUMN checks DROP DEFAULT,
    ALTER COLUMN checks TYPE json USING checks::json,
    ALTER COLUMN checks SET DEFAULT '[]'::json,
    ALTER COLUMN reasons TYPE json USING reasons::json;
ALTER TABLE participants
    ALTER COLUMN address TYPE json USING address::json,
    ALTER COLUMN reasons DROP DEFAULT,
    ALTER COLUMN reasons TYPE json USING reasons::json,
    ALTER COLUMN reasons SET DEFAULT '[]'::json;
