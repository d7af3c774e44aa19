# The worker image: installs the package the same way `make` does (pinned constraints, editable-free here).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY rmm_monitor ./rmm_monitor
COPY streams ./streams
COPY metrics ./metrics
RUN pip install --no-cache-dir -c constraints.txt .
ENV RMM_DB=/data/rmm.duckdb RMM_WEB_HOST=0.0.0.0 RMM_WEB_PORT=6066
VOLUME ["/data"]
EXPOSE 6066
CMD ["rmm", "worker"]
