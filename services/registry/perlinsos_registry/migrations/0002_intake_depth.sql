-- The NIK each submission concerned, so one person's whole history (refused attempts
-- by other agencies included) can be listed next to the audit trail.
ALTER TABLE submissions ADD COLUMN nik text;
CREATE INDEX submissions_nik ON submissions (nik) WHERE nik IS NOT NULL;
