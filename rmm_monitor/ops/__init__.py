"""Operations as code, generated from the catalog: Grafana dashboards, Prometheus alert rules with their promtool
tests and the Alertmanager routing, and the docker-compose stack's derived configuration."""
