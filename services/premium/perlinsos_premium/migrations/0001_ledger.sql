-- Effective-dated contribution rates: data, corrected by the city without a release.
CREATE TABLE rates (
    funding_line text    NOT NULL,
    component    text    NOT NULL CHECK (component IN ('JKK', 'JKM')),
    amount_idr   bigint  NOT NULL CHECK (amount_idr >= 0),
    valid_from   date    NOT NULL,
    valid_to     date,
    note         text,
    PRIMARY KEY (funding_line, component, valid_from)
);
-- PP 44/2015 as amended: JKK Rp10,000 (1% of the Rp1,000,000 minimum income), JKM Rp6,800.
-- PP 50/2025's discount does not apply to APBD-paid participants, so Batam pays Rp16,800.
INSERT INTO rates (funding_line, component, amount_idr, valid_from, note)
SELECT line, component, amount, DATE '2023-01-01', 'PP 44/2015 jo. PP 82/2019, PP 49/2023'
FROM unnest(ARRAY['PERWAKO-49-2025', 'PERWAKO-30-2025', 'PERWAKO-3-2023']) AS line,
     (VALUES ('JKK', 10000), ('JKM', 6800)) AS c(component, amount);

-- APBD allocation per line and fiscal year.
CREATE TABLE budgets (
    funding_line text   NOT NULL,
    fiscal_year  int    NOT NULL,
    amount_idr   bigint NOT NULL CHECK (amount_idr >= 0),
    note         text,
    PRIMARY KEY (funding_line, fiscal_year)
);
INSERT INTO budgets VALUES
 ('PERWAKO-30-2025', 2025, 2721600000, '13,500 x 16,800 x 12 (city budget arithmetic)'),
 ('PERWAKO-49-2025', 2025,  864998400, 'estimate: 12,872 x 16,800 x 4 (Sep-Dec)'),
 ('PERWAKO-3-2023',  2025, 1008000000, 'estimate: 5,000 x 16,800 x 12'),
 ('PERWAKO-30-2025', 2026, 2073456000, 'estimate: 10,285 x 16,800 x 12'),
 ('PERWAKO-49-2025', 2026, 2594995200, 'estimate: 12,872 x 16,800 x 12'),
 ('PERWAKO-3-2023',  2026, 1209600000, 'estimate: 6,000 x 16,800 x 12');

-- Cover per participant, from eligibility decisions.
CREATE TABLE covers (
    participant_id text PRIMARY KEY,
    funding_line   text NOT NULL,
    cover_start    date NOT NULL,
    cover_end      date
);

-- The ledger: one row per participant per billed month per funding line.
CREATE TABLE ledger (
    participant_id text   NOT NULL,
    period         text   NOT NULL,
    funding_line   text   NOT NULL,
    jkk_idr        bigint NOT NULL,
    jkm_idr        bigint NOT NULL,
    PRIMARY KEY (participant_id, period, funding_line)
);
CREATE INDEX ledger_line_period ON ledger (funding_line, period);

-- Running totals per line and month, and the revision last published.
CREATE TABLE summaries (
    funding_line    text   NOT NULL,
    period          text   NOT NULL,
    status          text   NOT NULL DEFAULT 'provisional' CHECK (status IN ('provisional', 'closed')),
    revision        int    NOT NULL DEFAULT 0,
    participants    int    NOT NULL DEFAULT 0,
    jkk_idr         bigint NOT NULL DEFAULT 0,
    jkm_idr         bigint NOT NULL DEFAULT 0,
    adjustments_idr bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (funding_line, period)
);
