-- The quality part's table (quality/suites.py): Great Expectations results, one row per expectation per run.
-- A failing critical row is what the data_quality alert fires on (alerting/signals.py).
CREATE TABLE IF NOT EXISTS dq_results (
    run_at TIMESTAMPTZ NOT NULL, suite VARCHAR NOT NULL, expectation VARCHAR NOT NULL, success BOOLEAN NOT NULL,
    observed VARCHAR, critical BOOLEAN NOT NULL
);
