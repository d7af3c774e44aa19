"""Alerting the QPPV: signals over the store (signals.py), alert and review-case records with their history
(records.py, tables in tables.sql), and the channels that carry the notifications (channels.py)."""
