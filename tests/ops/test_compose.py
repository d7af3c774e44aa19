"""docker-compose.yml cannot run here (no Docker engine), so it is checked against the repo instead: every file
it mounts exists, every port and RMM_* variable agrees with the worker's configuration and the other services,
the Dockerfile installs the package the way `make` does, and its Prometheus and Alertmanager configs pass
`promtool check config` / `amtool check-config` with the rule files they would load."""

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import yaml

from rmm_monitor.contract import ALERTS_TOPIC, DEADLETTER_TOPIC, TOPICS
from rmm_monitor.core.settings import Settings
from rmm_monitor.ops import compose as compose_config
from rmm_monitor.ops import grafana as dashboards

from support.paths import REPO

ROOT = REPO
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"


def bind_mounts(service: str) -> dict[str, Path]:
    """container path -> host path of the service's bind mounts (named volumes left out)."""
    out = {}
    for spec in SERVICES[service].get("volumes", []):
        source, target = spec.split(":")[:2]
        if source.startswith((".", "/")):
            out[target] = (ROOT / source).resolve()
    return out


def env(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (SERVICES[service].get("environment") or {}).items()}


def host_file(service: str, container_path: str) -> Path:
    for target, source in sorted(bind_mounts(service).items(), key=lambda kv: -len(kv[0])):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return source / container_path[len(target) :].lstrip("/")
    raise AssertionError(f"{service}: {container_path} is not mounted from the repo")


def test_services_and_volumes_of_the_stack():
    assert {"kafka", "topics-init", "worker", "prometheus", "alertmanager", "grafana", "mailpit"} <= set(SERVICES)
    assert SERVICES["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in env("kafka")["KAFKA_PROCESS_ROLES"], "KRaft: the node is its own controller"
    for name, svc in SERVICES.items():
        if name != "topics-init":
            assert "healthcheck" in svc, f"{name} has no healthcheck"
        if "image" in svc:
            assert re.search(r":[\w.-]+$", svc["image"]) and not svc["image"].endswith(":latest"), svc["image"]
        for spec in svc.get("volumes", []):
            source = spec.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in COMPOSE["volumes"], f"{name}: volume {source} not declared"
    worker_db = env("worker")["RMM_DB"]
    assert any(
        worker_db.startswith(spec.split(":")[1] + "/")
        for spec in SERVICES["worker"]["volumes"]
        if not spec.startswith(".")
    ), "the DuckDB file lives on a named volume"
    assert any(spec.endswith(":/prometheus") for spec in SERVICES["prometheus"]["volumes"])


def test_every_mounted_file_exists():
    for name in SERVICES:
        for target, source in bind_mounts(name).items():
            assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"
    assert SERVICES["worker"]["build"] in (".", "./") and (ROOT / "Dockerfile").exists()


def test_worker_environment_matches_settings_and_the_other_services(monkeypatch):
    worker_env = env("worker")
    known = set()
    for path in list((ROOT / "rmm_monitor").rglob("*.py")) + list((ROOT / "streams").rglob("*.py")):
        known |= set(re.findall(r"""["'](RMM_[A-Z0-9_]+)["']""", path.read_text()))
    unknown = {k for k in worker_env if k.startswith("RMM_")} - known
    assert not unknown, f"compose sets variables the code never reads: {unknown}"

    for key, value in worker_env.items():  # read the compose values through the real parsing code
        monkeypatch.setenv(key, re.sub(r"\$\{[^}]*\}", "x", value))
    settings = Settings.from_env()
    assert settings.web_host == "0.0.0.0", "inside a container the worker must listen beyond loopback"
    port = settings.web_port
    assert f"{port}:{port}" in SERVICES["worker"]["ports"]
    assert f"localhost:{port}/healthz" in " ".join(SERVICES["worker"]["healthcheck"]["test"])

    kafka_host, kafka_port = settings.bootstrap.split(":")
    assert kafka_host == "kafka"
    assert f"PLAINTEXT://kafka:{kafka_port}" in env("kafka")["KAFKA_ADVERTISED_LISTENERS"]
    assert f"PLAINTEXT://:{kafka_port}" in env("kafka")["KAFKA_LISTENERS"]
    init = " ".join(SERVICES["topics-init"]["command"])
    assert f"kafka:{kafka_port}" in init
    topics = re.search(r"for t in ([^;]+);", init).group(1).split()
    assert set(topics) == {*TOPICS, DEADLETTER_TOPIC, ALERTS_TOPIC}, "topics-init creates the contract's topics"
    assert worker_env["RMM_BOOTSTRAP_TOKEN"].startswith("${RMM_BOOTSTRAP_TOKEN:?"), "no default bootstrap token"

    assert worker_env["RMM_SMTP_HOST"] == "mailpit" and worker_env["RMM_SMTP_PORT"] == "1025"
    assert worker_env["RMM_ALERT_EMAIL_TO"]


def test_prometheus_scrapes_the_worker_and_passes_promtool(tmp_path):
    config_in_container = next(
        a.split("=", 1)[1] for a in SERVICES["prometheus"]["command"] if a.startswith("--config.file=")
    )
    config_file = host_file("prometheus", config_in_container)
    config = yaml.safe_load(config_file.read_text())
    [job] = [j for j in config["scrape_configs"] if j["job_name"] == dashboards.WORKER_JOB]
    assert (
        job["static_configs"][0]["targets"]
        == [f"worker:{Settings.from_env().web_port}"]
        == [f"worker:{env('worker')['RMM_WEB_PORT']}"]
    )
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    assert "9093:9093" in SERVICES["alertmanager"]["ports"] and "9090:9090" in SERVICES["prometheus"]["ports"]

    # The rule files as Prometheus would see them inside its container, mapped back to the repo.
    rule_files = []
    for pattern in config["rule_files"]:
        host_pattern = host_file("prometheus", pattern)
        matches = sorted(host_pattern.parent.glob(host_pattern.name))
        assert matches, f"rule_files {pattern} matches nothing in {host_pattern.parent}"
        rule_files += [str(m) for m in matches]
    local = dict(config, rule_files=rule_files)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(local))
    out = subprocess.run(
        [PROMTOOL, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout and len(rule_files) >= 1


def test_alertmanager_config_is_generated_mails_to_mailpit_and_passes_amtool():
    config_in_container = next(
        a.split("=", 1)[1] for a in SERVICES["alertmanager"]["command"] if a.startswith("--config.file=")
    )
    path = host_file("alertmanager", config_in_container)
    assert path.read_text() == compose_config.render()[path.name], "stale: run `make dashboards`"
    config = yaml.safe_load(path.read_text())
    mails = [e for r in config["receivers"] for e in r.get("email_configs", [])]
    assert mails and all(e["smarthost"] == "mailpit:1025" and e["require_tls"] is False for e in mails)
    out = subprocess.run([AMTOOL, "check-config", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_grafana_loads_the_generated_dashboards_and_the_fixed_datasource():
    provisioning = host_file("grafana", "/etc/grafana/provisioning")
    ds = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][0]
    url = urlparse(ds["url"])
    assert url.hostname == "prometheus" and url.port == 9090 and "prometheus" in SERVICES
    assert ds["uid"] == dashboards.DATASOURCE_UID
    provider = yaml.safe_load((provisioning / "dashboards" / "rmm.yml").read_text())["providers"][0]
    folder = host_file("grafana", provider["options"]["path"])
    assert sorted(p.name for p in folder.glob("*.json")) == sorted(dashboards.BUILDERS)
    home = env("grafana")["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_file("grafana", home).exists()
    assert env("grafana")["GF_SECURITY_ADMIN_PASSWORD"].startswith("${"), "no default admin password"


def test_dockerfile_installs_the_package_like_make():
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    make_install = re.search(r"pip install .*-c (\S+) -e '?\.(\[\w+\])?'?", makefile)
    assert make_install, "the Makefile's install line changed; update this test and the Dockerfile together"
    constraints = make_install.group(1)
    docker_install = re.search(r"pip install [^\n]*-c (\S+) \.\s*$", dockerfile, re.M)
    assert docker_install and docker_install.group(1) == constraints, "the image must use the same constraints"
    python = re.search(r"^FROM python:(\d+\.\d+)", dockerfile, re.M).group(1)
    assert f">={python}" in pyproject["project"]["requires-python"]
    copied = set(re.findall(r"^COPY (.+) \S+$", dockerfile, re.M))
    sources = {s for line in copied for s in line.split()}
    for needed in [
        "pyproject.toml",
        constraints,
        pyproject["project"]["readme"],
        *pyproject["tool"]["setuptools"]["package-dir"].values(),
    ]:
        assert needed in sources, f"the Dockerfile does not COPY {needed}"
    cmd = re.search(r'^CMD \["rmm", "worker"\]', dockerfile, re.M)
    assert cmd and "rmm" in pyproject["project"]["scripts"]
    assert f"RMM_WEB_PORT={env('worker')['RMM_WEB_PORT']}" in dockerfile
    assert f"EXPOSE {env('worker')['RMM_WEB_PORT']}" in dockerfile
