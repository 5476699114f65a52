-- The inbox keeps (source, id), whether the event was dead-lettered, and when it came:
-- the topic of each row was written (25 bytes, five rows a person) and never read.
ALTER TABLE inbox DROP COLUMN topic;
