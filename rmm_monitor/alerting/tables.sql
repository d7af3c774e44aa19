-- The alerting part's tables (alerting/records.py). Lifecycle state is never updated in place: every
-- transition is a history row, and the current state is the latest one (the *_state views).
CREATE TABLE IF NOT EXISTS alerts (
    alert_id VARCHAR PRIMARY KEY, signal VARCHAR NOT NULL, product VARCHAR NOT NULL, site_id VARCHAR NOT NULL,
    section VARCHAR NOT NULL, kpi VARCHAR NOT NULL, severity VARCHAR NOT NULL, period VARCHAR,
    title VARCHAR NOT NULL, details JSON, case_id VARCHAR, triggered_at TIMESTAMPTZ NOT NULL,
    fired_at TIMESTAMPTZ NOT NULL,
    -- what the alert is about within its signal when the other columns do not say (the finding of a critical audit
    -- finding); part of the deduplication key
    subject VARCHAR NOT NULL DEFAULT ''
);
-- a file written before `subject` existed gets it (its alerts are about nothing more specific: '')
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS subject VARCHAR DEFAULT '';
CREATE TABLE IF NOT EXISTS alert_history (
    alert_id VARCHAR NOT NULL, seq BIGINT NOT NULL, state VARCHAR NOT NULL, actor VARCHAR NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL, comment VARCHAR, PRIMARY KEY (alert_id, seq)
);
CREATE TABLE IF NOT EXISTS alert_evidence (
    alert_id VARCHAR NOT NULL, signal VARCHAR NOT NULL, event_id VARCHAR NOT NULL, added_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (signal, event_id)
);
CREATE TABLE IF NOT EXISTS review_cases (
    case_id VARCHAR PRIMARY KEY, product VARCHAR NOT NULL, section VARCHAR NOT NULL,
    triggered_at TIMESTAMPTZ NOT NULL, opened_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS review_case_history (
    case_id VARCHAR NOT NULL, seq BIGINT NOT NULL, state VARCHAR NOT NULL, outcome VARCHAR,
    material_version INTEGER, actor VARCHAR NOT NULL, changed_at TIMESTAMPTZ NOT NULL, comment VARCHAR,
    PRIMARY KEY (case_id, seq)
);
CREATE TABLE IF NOT EXISTS review_case_alerts (
    case_id VARCHAR NOT NULL, alert_id VARCHAR NOT NULL, linked_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (case_id, alert_id)
);
CREATE TABLE IF NOT EXISTS review_case_units (
    case_id VARCHAR NOT NULL, alert_id VARCHAR NOT NULL, kpi VARCHAR, unit_id VARCHAR, patient_ref VARCHAR,
    hcp_id VARCHAR, ae_id VARCHAR, lot_id VARCHAR, site_id VARCHAR, detail VARCHAR
);
CREATE TABLE IF NOT EXISTS alert_deliveries (
    delivery_id VARCHAR PRIMARY KEY, alert_id VARCHAR NOT NULL, notification VARCHAR NOT NULL,
    channel VARCHAR NOT NULL, created_at TIMESTAMPTZ NOT NULL, delivered_at TIMESTAMPTZ,
    attempts INTEGER NOT NULL, next_attempt_at TIMESTAMPTZ NOT NULL, last_error VARCHAR
);
CREATE OR REPLACE VIEW alert_state AS
    SELECT a.*, h.state, h.actor AS state_actor, h.changed_at AS state_at
    FROM alerts a JOIN (SELECT alert_id, arg_max(state, seq) AS state, arg_max(actor, seq) AS actor,
                               arg_max(changed_at, seq) AS changed_at FROM alert_history GROUP BY alert_id) h USING (alert_id);
CREATE OR REPLACE VIEW case_state AS
    SELECT c.*, h.state, h.outcome, h.material_version, h.actor AS state_actor, h.changed_at AS state_at
    FROM review_cases c JOIN (SELECT case_id, arg_max(state, seq) AS state, arg_max(outcome, seq) AS outcome,
                                     arg_max(material_version, seq) AS material_version,
                                     arg_max(actor, seq) AS actor, arg_max(changed_at, seq) AS changed_at
                              FROM review_case_history GROUP BY case_id) h USING (case_id);
