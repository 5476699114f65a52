-- Quotas and the waitlist: one counter row per funding line, locked FOR UPDATE by every
-- transaction that gives or frees a place, so several instances never over-fill a line.
CREATE TABLE line_places (
    funding_line text PRIMARY KEY,
    holders      integer     NOT NULL DEFAULT 0 CHECK (holders >= 0),  -- eligible now
    waiting      integer     NOT NULL DEFAULT 0 CHECK (waiting >= 0),  -- on the waitlist
    updated_at   timestamptz NOT NULL DEFAULT now()
);
INSERT INTO line_places (funding_line, holders, waiting)
SELECT funding_line,
       count(*) FILTER (WHERE outcome = 'eligible'),
       count(*) FILTER (WHERE outcome = 'waitlisted')
FROM participants WHERE funding_line IS NOT NULL GROUP BY funding_line;
INSERT INTO line_places (funding_line)
VALUES ('PERWAKO-49-2025'), ('PERWAKO-30-2025'), ('PERWAKO-3-2023')
ON CONFLICT (funding_line) DO NOTHING;

-- What `explain` needs: the NIK only as a keyed hash, and the checks behind the decision.
ALTER TABLE participants
    ADD COLUMN nik_hash text,
    ADD COLUMN checks   jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN reasons  jsonb NOT NULL DEFAULT '[]';
CREATE INDEX participants_nik_hash ON participants (nik_hash);
-- The waitlist in arrival order, per line.
CREATE INDEX participants_waitlist ON participants (funding_line, enrolled_at, participant_id)
    WHERE outcome = 'waitlisted';

ALTER TABLE decisions
    ADD COLUMN promoted boolean NOT NULL DEFAULT false,
    ADD COLUMN checks   jsonb   NOT NULL DEFAULT '[]';
