# The worker image. It installs the package the way `make` does: the same pyproject.toml under the same
# pinned constraints.txt (only non-editable and without the test extra), so the image runs the set the tests ran.
# tests/ops/test_compose.py checks this file against the Makefile and pyproject.toml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
# Every source folder of [tool.setuptools.package-dir] in pyproject.toml.
COPY rmm_monitor ./rmm_monitor
COPY streams ./streams
COPY metrics ./metrics
COPY expectations ./expectations
RUN python -m pip install --no-cache-dir --disable-pip-version-check --upgrade pip \
 && python -m pip install --no-cache-dir --disable-pip-version-check -c constraints.txt .
# The worker owns one DuckDB file on a volume and listens on all interfaces inside its container.
ENV RMM_DB=/data/rmm.duckdb RMM_WEB_HOST=0.0.0.0 RMM_WEB_PORT=6066
# A named volume starts as a copy of /data in the image, so the unprivileged user owns it.
RUN useradd --system --uid 10001 rmm && mkdir -p /data && chown rmm /data
USER rmm
VOLUME ["/data"]
EXPOSE 6066
CMD ["rmm", "worker"]
