from __future__ import annotations

import subprocess
import sys

CONTROL_PLANE = ("torch", "mlflow", "prefect", "evidently", "sklearn", "pandas", "onnx")


def test_serving_and_settings_import_nothing_of_the_control_plane() -> None:
    """The edge image installs only `.[edge]`; importing serving must not need more."""
    code = (
        "import sys, edgewave.serving.site, edgewave.serving.agent, edgewave.serving.app, edgewave.tasks.platform.settings, edgewave.flows.cli;"
        f"print(','.join(m for m in {CONTROL_PLANE!r} if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"edge imports pulled in: {loaded}"
