"""`edgewave fleet up/status/down` with real site processes and a real desired-state repo."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from edgewave.serving.desired import DesiredState
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.rollout.gitops import DesiredStateRepo
from tests.helpers import ALL_AT_ONCE, BIN, edgewave_env, free_port, wait_for, write_fleet_file


def test_fleet_up_status_down_by_pid(bundles, tmp_path: Path) -> None:
    home = tmp_path / "home"
    shutil.copytree(bundles.home / "keys", home / "keys", ignore=shutil.ignore_patterns("*.key"))
    fleet_file = tmp_path / "fleet.yaml"
    ports = [free_port(), free_port()]
    write_fleet_file(fleet_file, [{"id": f"site-{i}", "port": p, "labels": {"plant": "x"}} for i, p in enumerate(ports)],
                     ALL_AT_ONCE)
    # the control plane's own credentials in its environment: a site is never given them
    env = edgewave_env(home, EDGEWAVE_FLEET_PATH=str(fleet_file), EDGEWAVE_SYNC_INTERVAL_SECONDS="0.5",
                       EDGEWAVE_GIT_TOKEN="control-plane-push-token", AWS_SECRET_ACCESS_KEY="control-plane-aws-key",
                       MLFLOW_TRACKING_PASSWORD="control-plane-mlflow")

    def edgewave(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "edgewave"), "fleet", *args], env=env, capture_output=True, text=True,
                              timeout=120)

    up = edgewave("up")
    assert up.returncode == 0, up.stderr
    pids = {f.stem: json.loads(f.read_text())["pid"] for f in (home / "fleet").glob("*.json")}
    try:
        assert set(pids) == {"site-0", "site-1"}
        for pid in pids.values():
            told = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
            assert not [k for k, v in told.items() if v.startswith("control-plane-")], sorted(told)
            assert told["EDGEWAVE_SYNC_INTERVAL_SECONDS"] == "0.5" and told["EDGEWAVE_FLEET_ID"].startswith("fleet-")
            assert not [k for k in told if k.startswith(("PREFECT_", "MLFLOW_", "AWS_"))], sorted(told)
        repo = DesiredStateRepo.of(Settings(home=home)).ensure()
        repo.commit([DesiredState(site=f"site-{i}", model="machine-failure", version=1,
                                  bundle_url=bundles.v1.as_uri(), sha256=bundles.sha(bundles.v1), rollout_id="ro-t")
                     for i in range(2)], "ro-t: wave 1/1")

        def all_on_v1() -> bool:
            result = edgewave("status")
            return result.returncode == 0 and result.stdout.count("v1") == 4  # served and desired, both sites
        wait_for(all_on_v1, 120, "both sites to serve v1")
        assert edgewave("up").returncode == 0  # idempotent: running sites are left alone
        assert {f.stem: json.loads(f.read_text())["pid"] for f in (home / "fleet").glob("*.json")} == pids

        # A second home with the same fleet file (same site ids, same ports): these sites are not its own.
        other = edgewave_env(tmp_path / "other-home", EDGEWAVE_FLEET_PATH=str(fleet_file))
        ours = (home / "fleet-id").read_text().strip()
        status = subprocess.run([str(BIN / "edgewave"), "fleet", "status"], env=other, capture_output=True, text=True,
                                timeout=120)
        theirs = (tmp_path / "other-home" / "fleet-id").read_text().strip()
        assert theirs != ours
        assert "v1" not in status.stdout, "never shown as ready or serving: " + status.stdout
        for i, port in enumerate(ports):
            assert (f"site-{i}: not ready: wrong site at http://127.0.0.1:{port}/readyz: expected site-{i} of fleet "
                    f"{theirs}, found site-{i} of fleet {ours}") in status.stdout, status.stdout
        started = subprocess.run([str(BIN / "edgewave"), "fleet", "up"], env=other, capture_output=True, text=True,
                                 timeout=120)
        assert started.returncode != 0 and "wrong site at" in started.stderr, started.stderr
    finally:
        down = edgewave("down")
    assert down.returncode == 0 and "stopped 2 site(s)" in down.stderr
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists() or b"serve" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert not list((home / "fleet").glob("*.json"))
