"""Data quality: the Great Expectations suites of expectations/ validated against frames built from the store
(suites.py); results in the dq_results table (tables.sql)."""
