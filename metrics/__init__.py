"""The KPI catalog: one <kpi_id>.sql beside one <kpi_id>.yml per indicator, loaded by rmm_monitor.kpi.catalog."""
