-- JSON only ever written and read back whole (an audit change, an address, evidence,
-- refusal reasons) is kept as `json`, the text as sent, validated, instead of `jsonb`,
-- which decomposes every value and sorts its keys at each insert: the audit log's
-- change of an enrolment (the whole enrolment, 690 bytes) was registry's costliest
-- insert. Nothing queries inside these columns; readers get the same values.
ALTER TABLE audit_log ALTER COLUMN changes TYPE json USING changes::json;
ALTER TABLE participants
    ALTER COLUMN address TYPE json USING address::json,
    ALTER COLUMN evidence DROP DEFAULT,
    ALTER COLUMN evidence TYPE json USING evidence::json,
    ALTER COLUMN evidence SET DEFAULT '{}'::json;
ALTER TABLE submissions
    ALTER COLUMN reasons DROP DEFAULT,
    ALTER COLUMN reasons TYPE json USING reasons::json,
    ALTER COLUMN reasons SET DEFAULT '[]'::json;
