-- Several covers per participant over time (an exit, then a later re-enrolment).
ALTER TABLE covers DROP CONSTRAINT covers_pkey;
ALTER TABLE covers ADD PRIMARY KEY (participant_id, cover_start);

-- Who a participant is, from registry.participants.v1: for the BPJS reconciliation
-- sheets of the finance export only (personal data: never logged).
CREATE TABLE people (
    participant_id text PRIMARY KEY,
    nik            text NOT NULL,
    full_name      text NOT NULL
);

-- Corrections to closed months, booked in the first open month, per participant.
CREATE TABLE adjustments (
    id             bigserial PRIMARY KEY,
    participant_id text   NOT NULL,
    for_period     text   NOT NULL,
    funding_line   text   NOT NULL,
    booked_period  text   NOT NULL,
    jkk_idr        bigint NOT NULL,
    jkm_idr        bigint NOT NULL,
    reason         text   NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX adjustments_participant ON adjustments (participant_id);
CREATE INDEX adjustments_booked ON adjustments (funding_line, booked_period);

-- Summaries: a changed row is published by the coalescing publisher, not per batch.
ALTER TABLE summaries
    ADD COLUMN changed       boolean NOT NULL DEFAULT false,
    ADD COLUMN trace_headers jsonb,
    ADD COLUMN closed_at     timestamptz;
CREATE INDEX summaries_changed ON summaries (funding_line, period) WHERE changed;

-- Months whose running covers were billed in one set-based pass (month roll).
CREATE TABLE rolled_periods (
    period    text PRIMARY KEY,
    rolled_at timestamptz NOT NULL DEFAULT now()
);

-- What finance paid BPJS per line and month (premium.payments.v1).
CREATE TABLE payments (
    funding_line text   NOT NULL,
    reference    text   NOT NULL,
    period       text   NOT NULL,
    amount_idr   bigint NOT NULL CHECK (amount_idr > 0),
    paid_on      date   NOT NULL,
    recorded_by  text,
    event_id     text   NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (funding_line, reference)
);
CREATE INDEX payments_line_period ON payments (funding_line, period);

-- Payment terms: data, since the BPU due date is unconfirmed (docs/domain.md).
CREATE TABLE payment_terms (
    id                int  PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    due_day           int  NOT NULL CHECK (due_day BETWEEN 1 AND 28),
    lapse_risk_months int  NOT NULL CHECK (lapse_risk_months >= 1),
    note              text
);
INSERT INTO payment_terms VALUES
 (1, 15, 2, 'due by the 15th of the following month; lapse after 3 unpaid months');

-- Budget thresholds already announced (80%, 100%): logged and counted once each.
CREATE TABLE budget_alerts (
    funding_line  text NOT NULL,
    fiscal_year   int  NOT NULL,
    threshold_pct int  NOT NULL,
    used_idr      bigint NOT NULL,
    alerted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (funding_line, fiscal_year, threshold_pct)
);
