"""The work of the control plane, by capability: release/, rollout/, drift/, platform/, sim/.

Each capability is plain functions in small modules plus one `steps.py` of thin Prefect tasks
that its flow in flows/ composes.
"""

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
"""The checkout the control plane runs from: prefect.yaml, deployments/ and k8s/base live there."""
