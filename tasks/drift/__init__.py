"""Drift: sample windows in the monitoring store, per-site ledgers, Evidently checks, the fleet verdict.

`steps.py` holds the thin Prefect tasks of flows/drift.py; every other module is plain functions.
"""
