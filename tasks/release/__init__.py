"""The release: data → train → ONNX export + parity → signed bundle → MLflow registry → gate → serving image.

`steps.py` holds the thin Prefect tasks of flows/release.py; every other module is plain functions.
"""
