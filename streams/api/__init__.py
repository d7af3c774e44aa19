"""The worker's HTTP API, one module per part it serves: KPIs and health (kpis.py), alerts and review cases
(alerts.py), data quality (quality.py), the export's extras (export.py), sign-in, users, signatures and the audit log
(access.py), and who is asking (auth.py). The built-in page is streams/dashboard_page.py."""

from . import access, alerts, auth, export, kpis, quality

__all__ = ["access", "alerts", "auth", "export", "kpis", "quality"]
