"""Bundles as OCI artifacts: pushed to the image registry by the release, pulled by digest at the edge.

A bundle is one artifact with one layer per file (`model.onnx`, `bundle.json`, `bundle.sig`,
…), each with a media type of our own, so `oras` and registries show what it is. Desired
state names it as `oci://<registry>/<repository>@sha256:<manifest digest>`: immutable, so a
site runs exactly what was rolled out. Pulling checks every layer against its digest; the
caller then verifies the bundle's signature and file hashes as for any other transport.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edgewave.serving.access import RemoteAccess
from edgewave.serving.bundle import MANIFEST, SIGNATURE, BundleError, BundleUnsafeError, HashMismatchError
from edgewave.serving.errors import Actionable

SCHEME = "oci://"
ARTIFACT_TYPE = "application/vnd.edgewave.bundle.v1+json"  # the manifest config's media type
MEDIA_TYPES = {
    MANIFEST: "application/vnd.edgewave.bundle.manifest.v1+json",
    SIGNATURE: "application/vnd.edgewave.bundle.signature.v1+json",
}
MODEL_MEDIA_TYPE = "application/vnd.edgewave.bundle.model.v1+onnx"
MANIFEST_ACCEPT = ["application/vnd.oci.image.manifest.v1+json"]
HINT_RETRY_PAUSE = 0.2  # seconds before a change hint answered with a 5xx is asked once more


class OciError(ConnectionError, Actionable):
    """The registry could not be reached, refused us, or served something that is not the bundle asked for."""


@dataclass(frozen=True)
class Reference:
    registry: str  # host:port
    repository: str
    digest: str | None = None
    tag: str | None = None

    @classmethod
    def parse(cls, url: str) -> Reference:
        """`oci://host:port/repo/path@sha256:…` or `…:tag`."""
        if not url.startswith(SCHEME):
            raise ValueError(f"{url}: not an {SCHEME} reference")
        rest = url.removeprefix(SCHEME)
        registry, _, path = rest.partition("/")
        digest = tag = None
        if "@" in path:
            path, digest = path.split("@", 1)
        elif ":" in path.rsplit("/", 1)[-1]:
            path, tag = path.rsplit(":", 1)
        if not registry or not path:
            raise ValueError(f"{url}: expected {SCHEME}<registry>/<repository>@sha256:<digest>")
        return cls(registry, path, digest, tag)

    @property
    def target(self) -> str:
        return f"{self.registry}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag or 'latest'}")

    def url(self) -> str:
        return SCHEME + self.target


def plain_http(registry: str, access: RemoteAccess) -> bool:
    """HTTP only when asked to, or for a registry on this machine's loopback."""
    if access.registry_plain_http is not None:
        return access.registry_plain_http
    host = registry.rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "[::1]")


ONCE_TIMEOUT = (5.0, 15.0)  # connect, read: one attempt's deadline for calls made `once`


def client(registry: str, access: RemoteAccess, *, once: bool = False):
    """An oras client for `registry` with the configured credentials (basic auth, or the token a
    registry asks for), quiet. `once`: every request is one attempt with a deadline, where oras would
    retry five times sleeping 3 + 3^n s (over two minutes on a registry that is down): for calls on
    someone else's clock, a rollout's commit or an agent's cycle, which have their own retries."""
    import oras.client

    logging.getLogger("oras").setLevel(logging.WARNING)
    oras_client = oras.client.OrasClient(hostname=registry, insecure=plain_http(registry, access), auth_backend="basic")
    if access.registry_username and access.registry_password:
        oras_client.auth.set_basic_auth(access.registry_username, access.registry_password)
    if once:
        for scheme in ("http://", "https://"):
            oras_client.session.mount(scheme, _deadline_adapter())
        oras_client.do_request = functools.partial(type(oras_client).do_request.__wrapped__, oras_client)
    return oras_client


@functools.cache
def _deadline_adapter_class():
    from requests.adapters import HTTPAdapter

    class DeadlineAdapter(HTTPAdapter):
        """Every request through it has a deadline (requests' own default is none: a stalled registry
        would hold the caller forever)."""

        def send(self, request, *args, **kwargs):
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = ONCE_TIMEOUT
            return super().send(request, *args, **kwargs)

    return DeadlineAdapter


def _deadline_adapter():
    return _deadline_adapter_class()()


def media_type(name: str) -> str:
    return MEDIA_TYPES.get(name) or (MODEL_MEDIA_TYPE if name.endswith(".onnx") else "application/octet-stream")


def push_bundle(folder: Path, repository_ref: str, tag: str, access: RemoteAccess, config: dict) -> str:
    """Push `folder`'s files as one artifact tagged `tag`; returns its `oci://…@sha256:` reference."""
    ref = Reference.parse(f"{repository_ref.rstrip('/')}:{tag}")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    with tempfile.TemporaryDirectory(prefix="edgewave-oci-") as tmp:
        config_path = Path(tmp) / "config.json"
        config_path.write_text(json.dumps(config, sort_keys=True))
        try:
            response = client(ref.registry, access).push(
                target=ref.target, files=[f"{p}:{media_type(p.name)}" for p in files], disable_path_validation=True,
                manifest_config=f"{config_path}:{ARTIFACT_TYPE}", quiet=True,
                manifest_annotations={"org.opencontainers.image.title": f"{config.get('name')} v{config.get('version')}"})
        except Exception as exc:  # requests and oras raise many types; say which registry and what
            raise OciError(f"push of {folder.name} to {ref.target} failed: {type(exc).__name__}: {exc}") from None
    digest = response.headers.get("Docker-Content-Digest")
    if not digest:
        raise OciError(f"{ref.registry} accepted {ref.target} but reported no digest")
    return Reference(ref.registry, ref.repository, digest=digest).url()


def pull_bundle(url: str, folder: Path, access: RemoteAccess) -> Path:
    """Pull the artifact at `url` (by digest) into `folder`, every layer checked against its digest."""
    ref = Reference.parse(url)
    if not ref.digest:
        raise ValueError(f"{url}: a site pulls bundles by digest only (…@sha256:…), never by a movable tag")
    oras_client = client(ref.registry, access)
    try:
        manifest = oras_client.get_manifest(ref.target, allowed_media_type=MANIFEST_ACCEPT)
        folder.mkdir(parents=True, exist_ok=True)
        for layer in manifest.get("layers", []):
            name = (layer.get("annotations") or {}).get("org.opencontainers.image.title", "")
            if not name or "/" in name or name.startswith("."):  # a refusal of the artifact, not an outage
                raise BundleUnsafeError(f"{url}: layer {layer.get('digest')} has no usable file name ({name!r})")
            target = folder / name
            oras_client.download_blob(ref.target, layer["digest"], str(target))
            actual = "sha256:" + hashlib.sha256(target.read_bytes()).hexdigest()
            if actual != layer["digest"]:
                raise HashMismatchError(f"{url}: {name} has digest {actual}, the manifest says {layer['digest']}")
    except (OciError, BundleError):
        raise
    except Exception as exc:
        raise OciError(f"pull of {url} failed: {type(exc).__name__}: {exc}") from None
    return folder


# -- the desired state's change hints ------------------------------------------------------------
HINT_MEDIA_TYPE = "application/vnd.edgewave.desired-state-hint.v1+json"
HINT_ANNOTATION = "org.edgewave.desired-state.file"


def hint_reference(url: str) -> Reference:
    """The hints' base tag; ValueError for anything else (a digest cannot move)."""
    ref = Reference.parse(url)
    if ref.digest or not ref.tag:
        raise ValueError(f"{url}: a change hint is a tag the control plane moves (oci://<registry>/<repository>:<tag>), "
                         "never a digest")
    return ref


def site_hint(url: str, site: str) -> Reference:
    """A site's own hint: the tag `<tag>-<site>` in the hint's repository (one per site, so a wave
    moves only its own sites' hints and a canary of five makes five sites fetch, not the fleet)."""
    ref = hint_reference(url)
    tag = f"{ref.tag}-{site}"
    if len(tag) > 128:
        raise ValueError(f"{url}: the tag {tag[:40]}… for site {site} is longer than the 128 characters a tag may have")
    return Reference(ref.registry, ref.repository, tag=tag)


HINT_CONFIG = b"{}"  # every hint shares this config blob; what moves is the manifest's annotation
OCI_MANIFEST = MANIFEST_ACCEPT[0]


def _api(ref: Reference, access: RemoteAccess) -> str:
    """The registry API's base URL for the reference's repository."""
    return f"{'http' if plain_http(ref.registry, access) else 'https'}://{ref.registry}/v2/{ref.repository}"


def push_hint(url: str, site: str, content: str, access: RemoteAccess, oras_client=None) -> str:
    """Point `site`'s hint tag at a manifest that names `content`, the Git blob id of its desired-state
    file (or "absent"); returns the manifest's digest. The manifest is that id and the shared empty
    config alone, so the digest moves exactly when the site's file did, pushing the same content twice
    changes nothing, and a push is one request (the config is uploaded once, when the registry lacks
    it). `oras_client`: one to reuse (a controller moving many hints keeps one per thread)."""
    ref = site_hint(url, site)
    api, oras_client = _api(ref, access), oras_client or client(ref.registry, access, once=True)
    config = "sha256:" + hashlib.sha256(HINT_CONFIG).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [],
        "config": {"mediaType": HINT_MEDIA_TYPE, "digest": config, "size": len(HINT_CONFIG)},
        "annotations": {HINT_ANNOTATION: content},
    }, sort_keys=True).encode()
    def put():
        return oras_client.do_request(f"{api}/manifests/{ref.tag}", "PUT", data=manifest,
                                      headers={"Content-Type": OCI_MANIFEST})

    try:
        response = put()
        if response.status_code == 400:  # the config is not in this repository yet
            _upload_blob(oras_client, ref, api, HINT_CONFIG, config)
            response = put()
    except OciError:
        raise
    except Exception as exc:  # requests raises many types; say which registry and what
        raise OciError(f"push of the change hint {ref.target} failed: {type(exc).__name__}: {exc}") from None
    if response.status_code != 201:
        raise OciError(f"push of the change hint {ref.target}: the registry answered {response.status_code} "
                       f"{response.text[:200]}")
    return response.headers.get("Docker-Content-Digest", "")


def _upload_blob(oras_client, ref: Reference, api: str, data: bytes, digest: str) -> None:
    """A blob in one go: open an upload, put the bytes with their digest."""
    response = oras_client.do_request(f"{api}/blobs/uploads/", "POST")
    location = response.headers.get("Location", "")
    if response.status_code != 202 or not location:
        raise OciError(f"upload to {ref.registry}/{ref.repository}: the registry answered {response.status_code}")
    if location.startswith("/"):
        location = api.split("/v2/", 1)[0] + location
    response = oras_client.do_request(f"{location}{'&' if '?' in location else '?'}digest={digest}", "PUT", data=data,
                                      headers={"Content-Type": "application/octet-stream"})
    if response.status_code != 201:
        raise OciError(f"upload to {ref.registry}/{ref.repository}: the registry answered {response.status_code}")


class HintWatcher:
    """What an agent asks before a Git fetch: its own hint tag's current digest, by one HTTP HEAD on a
    connection it keeps (an SSH handshake and a Git negotiation cost the Git host far more; see
    bench/fleet_sync.py). The registry is asked, never trusted: a stale or missing hint only delays a
    fetch until the agent's next full sync."""

    def __init__(self, url: str, site: str, access: RemoteAccess) -> None:
        self.ref = site_hint(url, site)
        self.access = access
        self._client = None
        self._url = f"{_api(self.ref, access)}/manifests/{self.ref.tag}"

    def digest(self) -> str | None:
        """The tag's digest now; None when nothing was published there yet. OciError when not reached."""
        if self._client is None:
            self._client = client(self.ref.registry, self.access, once=True)
        for attempt in range(2):
            try:
                response = self._client.do_request(self._url, "HEAD", headers={"Accept": OCI_MANIFEST})
            except Exception as exc:
                self._client = None  # a new connection next time
                raise OciError(f"change hint {self.ref.target}: {type(exc).__name__}: {exc}") from None
            if response.status_code < 500 or attempt:
                break
            # asked once more: docker-registry's file storage answers 500 ("invalid checksum digest format")
            # to a HEAD that reads a tag while the controller rewrites it (measured: bench/fleet_sync.py)
            time.sleep(HINT_RETRY_PAUSE)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise OciError(f"change hint {self.ref.target}: the registry answered {response.status_code}")
        return response.headers.get("Docker-Content-Digest") or response.headers.get("ETag")
