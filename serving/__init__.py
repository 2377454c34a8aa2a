"""What runs at an edge site. Imports nothing from the control plane (no torch, mlflow, prefect)."""
