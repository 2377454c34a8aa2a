"""The rollout: wave plan, desired state in Git (and Kubernetes overlays), the lease, telemetry,
canary analysis, the controller, timelines.

`steps.py` holds the thin Prefect tasks of flows/rollout.py; every other module is plain functions.
"""
