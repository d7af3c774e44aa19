"""The worker's HTTP API, one module per part it serves: KPIs and health (kpis.py), alerts and review cases
(alerts.py), data quality and the export's extras (quality.py). The built-in page is streams/dashboard_page.py."""

from . import alerts, export, kpis, quality

__all__ = ["alerts", "export", "kpis", "quality"]
