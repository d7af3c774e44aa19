# Two commands on a fresh machine: `make run` (the embedded demo) and `make test`.
# Both create the virtualenv and install the pinned dependencies themselves.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-12)

.PHONY: run test lint venv debs audit audit-offline audit-refresh test-clock-shifts bench clean lock dashboards rules docs

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

# The verdict depends only on the commit: no test reads the network or the calendar (the suite runs on its own
# clock, tests/conftest.py), and the dependency audit inside it is the offline one.
test: venv debs lint audit-offline
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The lint and type gate (part of `make test`): ruff's lint rules and its format check, mypy on the package
# (rmm_monitor/ and streams/), and the import direction (scripts/check_layers.py).
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) scripts/check_layers.py

# The pins of constraints.txt against published advisories (what pip-audit does; see scripts/audit_deps.py).
# Fails only on an advisory affecting a pin that deploy/audit-allowlist.toml does not accept; pins it cannot check
# are warnings. `audit` asks PyPI now (CI runs it beside `make test`; without network it reads the committed
# record); `audit-offline` reads only the committed record and snapshot (part of `make test`); `audit-refresh`
# rewrites the record (commit it).
audit: venv
	$(PY) scripts/audit_deps.py

audit-offline: venv
	$(PY) scripts/audit_deps.py --offline

audit-refresh: venv
	$(PY) scripts/audit_deps.py --refresh

# The whole suite with the machine clock shifted (faketime): +1 day, +100 days, +400 days, and the last second of a
# quarter seen from UTC+08:00. Long (one suite run per shift); results in build/clock-shifts/.
test-clock-shifts: venv debs
	bash scripts/clock-shifts.sh

bench: venv
	$(PY) bench/run.py

# Grafana dashboards from the KPI catalog and the compose stack's derived configs (commit the result; tests
# fail when they are stale).
dashboards: venv
	$(PY) -m rmm_monitor.ops.grafana --out dashboards/grafana/dashboards
	$(PY) -m rmm_monitor.ops.compose --out deploy

# The references generated from the code and the catalog: the event types (docs/events.md) and the catalog table
# of docs/kpi-rules.md (commit the result; tests fail when they are stale).
docs: venv
	$(PY) -m rmm_monitor.contract.reference --out docs/events.md
	$(PY) -m rmm_monitor.kpi.reference --page docs/kpi-rules.md --glossary docs/glossary.md

# Prometheus alert rules, their promtool tests and the Alertmanager routing from the catalog (commit the result).
rules: venv
	$(PY) -m rmm_monitor.ops.prometheus --out dashboards

# Regenerate the exact pins after changing dependencies (then run `make test`).
lock: venv
	$(PY) -m pip freeze --exclude-editable | grep -v '^rmm-monitor' > constraints.txt

clean:
	rm -rf $(VENV) demo-out build *.egg-info
