# Two commands on a fresh machine: `make run` (the embedded demo) and `make test`.
# Both create the virtualenv and install the pinned dependencies themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)

.PHONY: run test venv debs audit audit-refresh bench clean lock dashboards rules

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

run: venv
	$(VENV)/bin/rmm demo

debs:
	bash scripts/install-debs.sh

# Tests wait on brokers and worker subprocesses much of the time: run them on 3 processes (2 cores).
# loadgroup = load, except tests marked xdist_group(name) share one process (and so one module-scoped stack).
PYTEST_ARGS ?= -n 3 --dist loadgroup

test: venv debs audit
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The pins of constraints.txt against published advisories (what pip-audit does; see scripts/audit_deps.py):
# PyPI's JSON API live, or its committed record when PyPI does not answer; accepted advisories in
# deploy/audit-allowlist.toml. `audit-refresh` rewrites the record (commit it; the offline check refuses a
# record older than 60 days).
audit: venv
	$(PY) scripts/audit_deps.py

audit-refresh: venv
	$(PY) scripts/audit_deps.py --refresh

bench: venv
	$(PY) bench/run.py

# Grafana dashboards from the KPI catalog and the compose stack's derived configs (commit the result; tests
# fail when they are stale).
dashboards: venv
	$(PY) -m rmm_monitor.dashboards --out dashboards/grafana/dashboards
	$(PY) -m rmm_monitor.compose_config --out deploy

# Prometheus alert rules, their promtool tests and the Alertmanager routing from the catalog (commit the result).
rules: venv
	$(PY) -m rmm_monitor.alert_rules --out dashboards

# Regenerate the exact pins after changing dependencies (then run `make test`).
lock: venv
	$(PY) -m pip freeze --exclude-editable | grep -v '^rmm-monitor' > constraints.txt

clean:
	rm -rf $(VENV) demo-out build *.egg-info
