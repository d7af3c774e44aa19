"""The stream processor: the faust app, the batch ingest task, the HTTP API and /metrics."""
