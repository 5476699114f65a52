-- How SMS address a person: notify greets "Bapak"/"Ibu" (from the KTP sex) and the first
-- word of the full name that is a name (not an initial or a title such as "Hj."). Kept
-- for the later decisions (promotion, exit) that are made from this table. Personal
-- data, like first_name and phone_e164: never logged.
ALTER TABLE participants
    ADD COLUMN full_name text,
    ADD COLUMN sex       text CHECK (sex IN ('L', 'P'));
