"""The rollout: fleet and policy file, wave plan, desired state in Git (and Kubernetes overlays),
telemetry, canary analysis, the controller, timelines.

`steps.py` holds the thin Prefect tasks of flows/rollout.py; every other module is plain functions.
"""
