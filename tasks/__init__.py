"""The work of the control plane, in layers that only import downwards (checked by
import-linter, `make lint`):

    sim/ | fleet/      demo traffic and site windows | fleet-wide read models, local fleet, servers
    drift/ | rollout/  the capabilities that watch and deploy (independent of each other)
    release/           train, export, sign, register, gate, build the serving image
    data/              dataset specs, users' data files, the simulated machines
    platform/          settings, fleet file, monitoring store, runs, progress, processes, engine

Each capability is plain functions in small modules plus one `steps.py` of thin Prefect tasks
that its flow in flows/ composes.
"""

from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
"""The checkout the control plane runs from: prefect.yaml, deployments/ and k8s/base live there."""
