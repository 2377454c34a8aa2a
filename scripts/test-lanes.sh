#!/usr/bin/env bash
# `make test`: the suite in two lanes side by side on this 2-core machine. The engine lane
# (every e2e test and every test on the Docker engine, one engine for the lane) prints here as
# it runs; the other lane (unit, the remaining integration tests and the e2e tests marked
# `beside_engine`, which need no engine: tests/conftest.py) writes its log to a file,
# printed when it is done. Fails when either lane fails. Extra arguments go to both lanes.
# Each lane draws test ports from its own range (tests/helpers.py: free_port).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
log=$(mktemp -t edgewave-lane-XXXXXX.log)

EDGEWAVE_TEST_LANE=other "$PYTHON" -m pytest -m "not engine_lane" "$@" >"$log" 2>&1 &
other=$!
EDGEWAVE_TEST_LANE=engine "$PYTHON" -m pytest -m "engine_lane" "$@"
engine_rc=$?
wait "$other"
other_rc=$?

echo
echo "================ the other lane (unit + integration without the engine) ================"
cat "$log"
rm -f "$log"
# pytest exits 5 when a lane selected no test (e.g. a path given that holds none of it)
for rc in "$engine_rc" "$other_rc"; do
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
        echo "test lanes: engine lane exit $engine_rc, other lane exit $other_rc" >&2
        exit 1
    fi
done
echo "test lanes: both passed"
