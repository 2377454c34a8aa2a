"""Prefect flows (composition only) and the `edgewave` command line."""
