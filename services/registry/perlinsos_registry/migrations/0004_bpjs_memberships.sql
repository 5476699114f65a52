-- BPJS Ketenagakerjaan's answer to the collective registration, stored with the participant:
-- the membership number (KPJ) and BPJS's cover start, or the refusal. NULL: not answered yet.
ALTER TABLE participants
    ADD COLUMN bpjs_answer      text CHECK (bpjs_answer IN ('KPJ_ASSIGNED', 'ALREADY_BPJS_MEMBER', 'REFUSED')),
    ADD COLUMN bpjs_kpj         text,
    ADD COLUMN bpjs_cover_start date,
    ADD COLUMN bpjs_refusal     text,
    ADD COLUMN bpjs_answered_at timestamptz;
CREATE INDEX participants_bpjs_kpj ON participants (bpjs_kpj) WHERE bpjs_kpj IS NOT NULL;

-- One reply per row of an answer file: what registry did with it. The importing command
-- reads these to write its result file; a file imported again finds its rows answered.
CREATE TABLE bpjs_answers (
    import_id   text        NOT NULL,
    row_number  integer     NOT NULL,
    status      text        NOT NULL CHECK (status IN ('stored', 'unchanged', 'UNKNOWN_NIK')),
    participant_id text,
    answered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (import_id, row_number)
);
