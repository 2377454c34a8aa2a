"""Kubernetes sites in the desired-state repo: a kustomize overlay per site over `k8s/base`.

A Kubernetes site's desired state carries the serving image (model baked in). Next to
`sites/<site>.yaml` the rollout writes `k8s/overlays/<site>/kustomization.yaml`, which pins
that image (tag or digest) and the model version over a copy of this checkout's `k8s/base`;
Argo CD or Flux renders and applies it. A rollback restores the previous desired state, so
the overlay returns to the previous image in the same commit.
"""

from __future__ import annotations

import re

import yaml

from edgewave.serving.desired import DesiredState
from edgewave.tasks import CHECKOUT

BASE = CHECKOUT / "k8s" / "base"
IMAGE_NAME = "edgewave-serving"  # the image name k8s/base/deployment.yaml uses
IMAGE_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9._:/-]*?)(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?$")


def image_fields(reference: str) -> dict[str, str]:
    """kustomize `images:` fields for `registry/name:tag` or `registry/name@sha256:...` (digest wins)."""
    match = IMAGE_RE.match(reference)
    if not match or not (match["tag"] or match["digest"]):
        raise ValueError(f"image {reference!r}: expected <registry>/<name>:<tag> or <registry>/<name>@sha256:<64 hex>")
    fields = {"name": IMAGE_NAME, "newName": match["name"]}
    if match["digest"]:
        fields["digest"] = match["digest"]
    else:
        fields["newTag"] = match["tag"]
    return fields


def overlay_path(site: str) -> str:
    return f"k8s/overlays/{site}/kustomization.yaml"


def overlay(state: DesiredState) -> str:
    """The site's kustomization: base + pinned image + site settings + labels naming the model."""
    if not state.image:
        raise ValueError(f"site {state.site}: a Kubernetes site needs an image in its desired state")
    doc = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": ["../../base"],
        "images": [image_fields(state.image)],
        "labels": [{"pairs": {"edgewave.io/site": state.site, "edgewave.io/model": state.model,
                              "edgewave.io/model-version": str(state.version)},
                    "includeSelectors": False, "includeTemplates": True}],
        "patches": [{"target": {"kind": "ConfigMap", "name": "edgewave-site"},
                     "patch": yaml.safe_dump([
                         {"op": "replace", "path": "/data/EDGEWAVE_SITE_ID", "value": state.site},
                         {"op": "replace", "path": "/data/EDGEWAVE_MODEL_VERSION", "value": str(state.version)},
                         *([{"op": "add", "path": "/data/EDGEWAVE_FLEET_ID", "value": state.fleet}] if state.fleet
                           else []),
                     ], sort_keys=False)}],
        "commonAnnotations": {"edgewave.io/rollout": state.rollout_id, "edgewave.io/bundle-sha256": state.sha256},
    }
    header = f"# Written by the edgewave rollout ({state.rollout_id}); edit the fleet or roll out instead.\n"
    return header + yaml.safe_dump(doc, sort_keys=False)


def base_files() -> dict[str, str]:
    """This checkout's kustomize base, as files of the desired-state repo."""
    return {f"k8s/base/{path.name}": path.read_text() for path in sorted(BASE.glob("*.yaml"))}
