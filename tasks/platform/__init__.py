"""The base every capability stands on: settings, the fleet file, the monitoring store, Prefect
run helpers, progress, local processes by pid, and the Docker engine with its registry. It
imports no capability (import-linter checks it)."""
