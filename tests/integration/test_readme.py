"""The README's examples, run as a newcomer would type them: a guide whose first command never becomes
ready loses its reader."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.conftest import Bundles
from tests.helpers import BIN, free_port, stop, wait_for

README = Path(__file__).resolve().parents[2] / "README.md"


def bash_block_after(heading: str) -> list[str]:
    """The commands of the first ```bash block under `heading` (continued lines joined)."""
    text = README.read_text()
    section = text[text.index(heading):]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, f"no bash block under {heading!r}"
    commands: list[str] = []
    for line in block.group(1).splitlines():
        if commands and (commands[-1].count("'") % 2 == 1):  # inside a quoted argument over several lines
            commands[-1] += "\n" + line
        elif line.strip() and not line.lstrip().startswith("#"):
            commands.append(line)
    return commands


def test_the_edge_site_example_serves_the_bundle_this_home_released(bundles: Bundles, tmp_path: Path) -> None:
    """`edgewave serve --bundle .edgewave/bundles/…/v1`, then the README's curl: with no keys configured
    the site trusts the release key of the home it runs in, and answers with the bundle's version."""
    serve, _site, curl = bash_block_after("## The edge site")
    assert serve.startswith("edgewave serve --bundle .edgewave/bundles/machine-failure/v1"), serve
    assert curl.startswith("curl -s localhost:8080/v1/predict"), curl
    shutil.copytree(bundles.home, tmp_path / ".edgewave")  # a control-plane home that released v1
    port = str(free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEWAVE_", "PREFECT_", "MLFLOW_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    args = shlex.split(serve.split("#")[0])
    args[args.index("--port") + 1] = port  # the README's port may be taken on a shared machine
    log = tmp_path / "serve.log"
    with open(log, "w") as output:
        site = subprocess.Popen([*args, "--host", "127.0.0.1"], cwd=tmp_path, env=env, stdout=output,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def answered() -> bool:
            done = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                   f"http://127.0.0.1:{port}/readyz"], capture_output=True, text=True)
            return done.stdout == "200"
        wait_for(lambda: site.poll() is None and answered(), 60, f"the README's site to be ready ({log.read_text()})")
        result = subprocess.run(["bash", "-c", curl.replace("localhost:8080", f"127.0.0.1:{port}")],
                                capture_output=True, text=True, timeout=30)
        answer = json.loads(result.stdout)
        assert answer["model"] == "machine-failure" and answer["model_version"] == 1, answer
        assert [p["label"] in ("ok", "failure") and 0 <= p["probability"] <= 1 for p in answer["predictions"]] == [True]
    finally:
        stop(site)
    assert "trusting this home's release key" in log.read_text()
