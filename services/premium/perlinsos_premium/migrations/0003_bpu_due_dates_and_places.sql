-- Payment terms of BPU contributions, corrected (docs/domain.md, "Arrears and lapse"):
-- due by the 15th of the contribution month itself (not of the following month), on a
-- non-working day the next working day; no grace, BPU pay no late fine; participation
-- inactive after 3 consecutive unpaid months. Lapse risk now starts at the first missed
-- due date, so `lapse_risk_months` (the old threshold) is no longer read.
ALTER TABLE payment_terms
    ADD COLUMN due_month_offset   int NOT NULL DEFAULT 0 CHECK (due_month_offset BETWEEN 0 AND 1),
    ADD COLUMN grace_days         int NOT NULL DEFAULT 0 CHECK (grace_days BETWEEN 0 AND 31),
    ADD COLUMN lapse_after_months int NOT NULL DEFAULT 3 CHECK (lapse_after_months >= 1),
    ADD COLUMN sources            text;
UPDATE payment_terms SET
    due_day = 15,
    due_month_offset = 0,
    grace_days = 0,
    lapse_after_months = 3,
    lapse_risk_months = 1,
    note = 'BPU: due by the 15th of the contribution month itself (next working day on a'
        ' holiday); no late fine, no grace; inactive after 3 consecutive unpaid months',
    sources = 'BPJS Ketenagakerjaan BPU rules as reported by Kompas and Kontan (Permenaker);'
        ' BPJamsostek Sulawesi Tengah, July 2025. Grace 0: none found in the sources.';

-- Each missed due date of a line, announced once (log line, metric, republished summary).
CREATE TABLE arrears_alerts (
    funding_line text NOT NULL,
    period       text NOT NULL,
    missed_on    date NOT NULL,
    alerted_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (funding_line, period)
);

-- The places each year's allocation pays for (the budget arithmetic's head count, the
-- same figure as eligibility's quota for the line and year). Holders above it when the
-- quota falls at a year change keep their cover; finance sees how many and their cost.
ALTER TABLE budgets ADD COLUMN places int CHECK (places >= 0);
UPDATE budgets SET places = v.places FROM (VALUES
    ('PERWAKO-30-2025', 2025, 13500),
    ('PERWAKO-49-2025', 2025, 12872),
    ('PERWAKO-3-2023',  2025, 5000),
    ('PERWAKO-30-2025', 2026, 10285),
    ('PERWAKO-49-2025', 2026, 12872),
    ('PERWAKO-3-2023',  2026, 6000)
) AS v(funding_line, fiscal_year, places)
WHERE budgets.funding_line = v.funding_line AND budgets.fiscal_year = v.fiscal_year;
