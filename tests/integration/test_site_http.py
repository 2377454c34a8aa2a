"""A real site process on 127.0.0.1: valid requests, every kind of bad one, and a fuzz run."""

from __future__ import annotations

import http.client
import json
import urllib.request

import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from edgewave.tasks.data.ai4i import FEATURES
from edgewave.tasks.data.spec import load_spec
from edgewave.tasks.release.export import onnx_proba
from tests.helpers import DEPLOYMENTS, TEST_FLEET, free_port, post_json, start_site, stop

PHYSICAL = load_spec(DEPLOYMENTS / "dataset.yaml").physical_ranges()  # what the test bundles carry (tests/conftest.py)


BODY_SECONDS = 3  # the site's deadline for a whole request body


@pytest.fixture(scope="module")
def site(bundles, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("site") / "site.log"
    process = start_site(bundles.home, port, log, "--bundle", str(bundles.v2), EDGEWAVE_MAX_BATCH="100",
                         EDGEWAVE_REQUEST_BODY_SECONDS=str(BODY_SECONDS))
    yield port, process, log
    stop(process)


@pytest.fixture
def conn(site):
    connection = http.client.HTTPConnection("127.0.0.1", site[0], timeout=10)
    yield connection
    connection.close()


def rows(split, n: int) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, map(float, r))) for r in split.x_test[:n]]


def test_rows_and_columns_give_the_models_probabilities(conn, split, bundles) -> None:
    status, body = post_json(conn, "/v1/predict", json.dumps({"instances": rows(split, 20)}))
    assert status == 200
    assert body["model_version"] == 2 and body["model"] == "machine-failure"
    expected = onnx_proba((bundles.v2 / "model.onnx").read_bytes(), split.x_test[:20])
    np.testing.assert_allclose([p["probability"] for p in body["predictions"]], expected, atol=1e-6)
    threshold = json.loads((bundles.v2 / "bundle.json").read_text())["threshold"]
    assert [p["label"] for p in body["predictions"]] == ["failure" if p >= threshold else "ok" for p in expected]

    columns = {name: split.x_test[:20, j].astype(float).tolist() for j, name in enumerate(FEATURES)}
    status, body2 = post_json(conn, "/v1/predict", json.dumps({"columns": columns}))
    assert status == 200 and body2["predictions"] == body["predictions"]


def raw_exchange(port: int, head: bytes, body: bytes = b"", timeout: float = 30) -> tuple[int, bytes, bool]:
    """Send `head` (request line and headers) and `body` as they are on one socket; the answer's status,
    its whole text, and whether the site then closed the connection (read to EOF within `timeout`)."""
    import socket
    import time

    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(head + body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the site answered and closed before taking it all: its answer is still there to read
        received, deadline = b"", time.monotonic() + timeout
        while time.monotonic() < deadline:
            chunk = sock.recv(65536)
            if not chunk:
                return int(received.split(b" ", 2)[1]), received, True
            received += chunk
            if b"\r\n\r\n" in received and b"connection: close" not in received.lower():
                break  # answered, connection kept: nothing more will come
        return int(received.split(b" ", 2)[1]), received, False


def test_a_declared_body_over_the_limit_gets_413_at_once_and_a_stalled_body_408(site) -> None:
    port = site[0]
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: site\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000000000\r\n\r\n")  # 10 GB declared, nothing sent
    status, answer, closed = raw_exchange(port, head, timeout=BODY_SECONDS)  # before the body deadline: at once
    assert status == 413 and b"10000000000 bytes declared" in answer and closed, answer
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: site\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n")
    status, answer, closed = raw_exchange(port, head, b'{"instances": [', timeout=BODY_SECONDS * 10)
    assert status == 408 and b"not received within 3s (15 bytes arrived)" in answer and closed, answer


def test_repeated_keys_an_encoding_or_a_charset_the_site_does_not_decode_are_refused(conn, split) -> None:
    row = rows(split, 1)[0]
    plain = json.dumps({"instances": [row]})
    twice = plain.replace('"torque_nm": ', '"torque_nm": 41.0, "torque_nm": ', 1)
    status, body = post_json(conn, "/v1/predict", twice)
    assert status == 400 and "duplicate key 'torque_nm'" in body["error"], body
    escaped = plain.replace('"torque_nm": ', '"torque_nm": 41.0, "torque\\u005fnm": ', 1)  # the same key, escaped
    status, body = post_json(conn, "/v1/predict", escaped)
    assert status == 400 and "duplicate key 'torque_nm'" in body["error"], body
    status, body = post_json(conn, "/v1/predict", '{"instances": [], "instances": ' + json.dumps([row]) + "}")
    assert status == 400 and "duplicate key 'instances'" in body["error"], body
    for content_type in ("application/json; charset=utf-16", "application/json; charset=latin-1"):
        status, body = post_json(conn, "/v1/predict", plain, content_type)
        assert status == 415 and "is not decoded here; send UTF-8 JSON" in body["error"], body
    assert post_json(conn, "/v1/predict", plain, "application/json; charset=UTF-8")[0] == 200
    conn.request("POST", "/v1/predict", body=plain, headers={"Content-Type": "application/json",
                                                            "Content-Encoding": "gzip"})
    answer = conn.getresponse()
    assert answer.status == 415 and b"content-encoding gzip is not decoded here" in answer.read()


def test_integers_are_numbers_too(conn, split) -> None:
    row = {k: int(v) for k, v in rows(split, 1)[0].items()}
    assert post_json(conn, "/v1/predict", json.dumps({"instances": [row]}))[0] == 200


@pytest.mark.parametrize(("make_body", "status", "message"), [
    (lambda r: b'{"instances": [', 400, "malformed JSON"),
    (lambda r: b'{"instances": [{"torque_nm": NaN}]}', 400, "malformed JSON"),
    (lambda r: b"[1, 2]", 400, "body: expected a JSON object"),
    (lambda r: json.dumps({"rows": [r]}), 400, "unknown field(s) ['rows']"),
    (lambda r: json.dumps({"instances": [r], "columns": {}}), 400, "exactly one of"),
    (lambda r: json.dumps({"instances": [{k: v for k, v in r.items() if k != "torque_nm"}]}), 422,
     "instances[0]: missing feature(s) ['torque_nm']"),
    (lambda r: json.dumps({"instances": [{**r, "humidity": 0.4}]}), 422, "instances[0]: unknown feature(s) ['humidity']"),
    (lambda r: json.dumps({"instances": [{("torque" if k == "torque_nm" else k): v for k, v in r.items()}]}), 422,
     "missing feature(s) ['torque_nm']; unknown feature(s) ['torque']"),
    (lambda r: json.dumps({"instances": [r, {**r, "tool_wear_min": "12"}]}), 422,
     "instances[1].tool_wear_min: expected a number, got string"),
    (lambda r: json.dumps({"instances": [{**r, "product_quality": True}]}), 422,
     "instances[0].product_quality: expected a number, got boolean"),
    (lambda r: json.dumps({"instances": [{**r, "torque_nm": None}]}), 422, "instances[0].torque_nm: expected a number, got null"),
    (lambda r: json.dumps({"instances": [{**r, "torque_nm": 1e39}]}), 422, "instances[0].torque_nm: value 1e+39 is not a finite"),
    (lambda r: b'{"instances": [{"torque_nm": 1e999}]}', 400, "malformed JSON"),
    (lambda r: json.dumps({"instances": []}), 422, "instances: empty batch"),
    (lambda r: json.dumps({"instances": [r] * 101}), 413, "batch of 101 rows exceeds the maximum of 100"),
    (lambda r: json.dumps({"instances": ["row"]}), 422, "instances[0]: expected an object of features, got string"),
    (lambda r: json.dumps({"columns": {k: [v] for k, v in r.items() if k != "air_temperature_k"}}), 422,
     "columns: missing feature(s) ['air_temperature_k']"),
    (lambda r: json.dumps({"columns": {**{k: [v] for k, v in r.items()}, "torque_nm": [1.0, 2.0]}}), 422,
     "arrays have different lengths"),
    (lambda r: json.dumps({"columns": {**{k: [v] for k, v in r.items()}, "torque_nm": ["x"]}}), 422,
     "columns.torque_nm[0]: expected a number, got string"),
])
def test_bad_requests_get_a_4xx_that_names_the_problem(conn, split, make_body, status, message) -> None:
    got, body = post_json(conn, "/v1/predict", make_body(rows(split, 1)[0]))
    assert got == status, body
    assert message in body["error"]


def test_wrong_content_type_wrong_method_and_unknown_route(conn, site, split) -> None:
    status, body = post_json(conn, "/v1/predict", json.dumps({"instances": rows(split, 1)}), "text/plain")
    assert status == 415 and "content-type must be application/json" in body["error"]
    conn.request("GET", "/v1/predict")
    response = conn.getresponse()
    assert response.status == 405 and "takes POST" in json.loads(response.read())["error"]
    conn.request("GET", "/v2/predict")
    response = conn.getresponse()
    assert response.status == 404 and json.loads(response.read())["error"].startswith("no route")


def test_a_body_over_the_limit_is_413(site) -> None:
    """Sent in chunks (no length declared up front): refused once the limit is passed. The client sends
    the whole body, 1 MB past the limit, without reading (as most clients do): the site reads and drops
    the rest before it answers and closes, so the client reads the 413 instead of a connection reset
    (a close with unread bytes resets the connection; this failed about once in 300 before)."""
    big = b'{"instances": [' + b" " * (5 * 1024 * 1024)
    head = (b"POST /v1/predict HTTP/1.1\r\nHost: site\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    status, answer, closed = raw_exchange(site[0], head, b"%x\r\n%s\r\n0\r\n\r\n" % (len(big), big))
    assert status == 413 and b"body exceeds 4194304 bytes" in answer and closed, answer[:500]


def test_health_readiness_manifest_openapi_and_metrics(site, conn, split) -> None:
    port = site[0]
    base = f"http://127.0.0.1:{port}"
    # who answers, on every route a reader checks: the site's id (`edgewave serve` without --site: "local") and fleet
    identity = {"site": "local", "fleet": TEST_FLEET}
    assert json.loads(urllib.request.urlopen(f"{base}/healthz").read()) == {"status": "alive", **identity}
    assert json.loads(urllib.request.urlopen(f"{base}/v1/site").read()) == {"status": "alive", **identity}
    ready = json.loads(urllib.request.urlopen(f"{base}/readyz").read())
    assert ready["model_version"] == 2 and len(ready["sha256"]) == 64
    assert (ready["site"], ready["fleet"]) == ("local", TEST_FLEET)
    manifest = json.loads(urllib.request.urlopen(f"{base}/v1/model").read())
    assert manifest["input"]["features"][0]["name"] == FEATURES[0] and "columns" not in manifest["reference"]
    spec = json.loads(urllib.request.urlopen(f"{base}/openapi.json").read())
    assert spec["openapi"].startswith("3.") and "/v1/predict" in spec["paths"]

    # one out-of-range row is served and counted against its feature
    row = {**rows(split, 1)[0], "torque_nm": 150.0}  # physically possible, never seen in training
    status, body = post_json(conn, "/v1/predict", json.dumps({"instances": [row]}))
    assert status == 200 and body["out_of_range"] == {"torque_nm": 1}
    text = urllib.request.urlopen(f"{base}/metrics").read().decode()
    for series in ('edgewave_requests_total{route="/v1/predict",status="200"}',
                   'edgewave_requests_total{route="/v1/predict",status="422"}',
                   'edgewave_out_of_range_values_total{feature="torque_nm"}',
                   "edgewave_request_duration_seconds_bucket", "edgewave_inference_duration_seconds_bucket",
                   "edgewave_prediction_confidence_bucket", 'edgewave_predictions_total{label="ok"}',
                   'edgewave_model_info{model="machine-failure"', f'edgewave_site_info{{fleet_id="{TEST_FLEET}",site_id="local"}} 1.0',
                   "edgewave_model_swaps_total 1.0",
                   "edgewave_model_version 2.0"):
        assert series in text, series


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def payloads(draw) -> tuple[bytes, str]:
    """Valid-looking bodies with one thing wrong, random JSON, random bytes, odd content types."""
    kind = draw(st.sampled_from(["mutated_row", "mutated_columns", "random_json", "random_bytes"]))
    content_type = draw(st.sampled_from(["application/json"] * 8 + ["text/plain", "", "application/json; charset=utf-8"]))
    # each value inside its physical range, or (1 in 4) anywhere: physically impossible values get 422
    row = {name: draw(st.floats(*PHYSICAL[name]) | st.floats(-1e6, 1e6) | st.integers(-10**6, 10**6)
                      if draw(st.integers(0, 3)) == 0 else st.floats(*PHYSICAL[name]))
           for name in FEATURES}
    if kind == "mutated_row":
        key = draw(st.sampled_from(FEATURES + ("extra",)))
        value = draw(st.floats(*PHYSICAL[key]) | json_values) if key in PHYSICAL else draw(json_values)
        row = {**row, key: value} if draw(st.booleans()) else {k: v for k, v in row.items() if k != key}
        body = json.dumps({"instances": draw(st.lists(st.just(row), min_size=0, max_size=3))})
    elif kind == "mutated_columns":
        columns = {k: [v] for k, v in row.items()}
        columns[draw(st.sampled_from(FEATURES))] = draw(json_values)
        body = json.dumps({"columns": columns})
    elif kind == "random_json":
        body = json.dumps(draw(json_values))
    else:
        return draw(st.binary(max_size=64)), content_type
    return body.encode(), content_type


def test_fuzz_1000_requests_never_get_a_5xx_and_the_site_stays_up(site) -> None:
    port, process, log = site
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    statuses: list[int] = []
    reconnects: list[str] = []

    def post(body: bytes, headers: dict[str, str]) -> http.client.HTTPResponse:
        """One request; a keep-alive connection the server closed meanwhile (its idle timeout passes while
        a loaded machine draws the next example) is opened again once, as any HTTP client does."""
        for attempt in (1, 2):
            try:
                conn.request("POST", "/v1/predict", body=body, headers=headers)
                return conn.getresponse()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected) as exc:
                conn.close()
                reconnects.append(type(exc).__name__)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    @hsettings(max_examples=1000, deadline=None, database=None, derandomize=True,
               suppress_health_check=list(HealthCheck))
    @given(payloads())
    def one(payload: tuple[bytes, str]) -> None:
        body, content_type = payload
        response = post(body, {"Content-Type": content_type} if content_type else {})
        response.read()
        statuses.append(response.status)
        assert response.status < 500, (body, response.status)

    one()
    conn.close()
    assert len(reconnects) < 50, f"the site dropped {len(reconnects)} connections: {reconnects[:5]}"
    assert len(statuses) >= 1000
    assert {200, 400, 415, 422} <= set(statuses), sorted(set(statuses))
    assert process.poll() is None, log.read_text()
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").status == 200


async def asgi_call(app, body: bytes) -> tuple[int, dict]:
    """Drive the ASGI app in-process (no server), as uvicorn would."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": [(b"content-type", b"application/json")]}
    await app(scope, receive, send)
    return sent[0]["status"], json.loads(sent[1]["body"])


def asgi_post(app, body: bytes) -> tuple[int, dict]:
    import asyncio

    return asyncio.run(asgi_call(app, body))


def test_out_of_range_rows_are_refused_when_configured(bundles, split) -> None:
    from edgewave.serving.app import SiteApp
    from edgewave.serving.bundle import load_trusted_keys
    from edgewave.serving.metrics import SiteMetrics
    from edgewave.serving.model import ModelSlot

    slot = ModelSlot()
    slot.swap(bundles.v2, load_trusted_keys(bundles.home / "keys"))
    strict = SiteApp(slot, SiteMetrics("s"), reject_out_of_range=True)
    row = {**rows(split, 1)[0], "air_temperature_k": 340.0}  # physically possible, never seen in training
    status, body = asgi_post(strict, json.dumps({"instances": [rows(split, 1)[0], row]}).encode())
    assert status == 422 and "outside the training range: {'air_temperature_k': 1}" in body["error"]
    lenient = SiteApp(slot, SiteMetrics("s"))
    status, body = asgi_post(lenient, json.dumps({"instances": [row]}).encode())
    assert status == 200 and body["out_of_range"] == {"air_temperature_k": 1}


def test_concurrent_requests_share_onnx_calls_and_each_gets_its_own_rows(bundles, split) -> None:
    import asyncio

    from edgewave.serving.app import SiteApp
    from edgewave.serving.bundle import load_trusted_keys
    from edgewave.serving.metrics import SiteMetrics
    from edgewave.serving.model import ModelSlot

    slot = ModelSlot()
    slot.swap(bundles.v2, load_trusted_keys(bundles.home / "keys"))
    metrics = SiteMetrics("s")
    app = SiteApp(slot, metrics)
    bodies = [json.dumps({"instances": [dict(zip(FEATURES, map(float, r))) for r in split.x_test[i: i + 1 + i % 3]]}).encode()
              for i in range(40)]

    async def all_at_once() -> list[tuple[int, dict]]:
        return await asyncio.gather(*(asgi_call(app, b) for b in bodies))

    answers = asyncio.run(all_at_once())
    model = (bundles.v2 / "model.onnx").read_bytes()
    for i, (status, answer) in enumerate(answers):
        assert status == 200
        expected = onnx_proba(model, split.x_test[i: i + 1 + i % 3])
        np.testing.assert_allclose([p["probability"] for p in answer["predictions"]], expected, atol=1e-6)
    onnx_calls = sum(metrics.hot.inference.counts)
    assert onnx_calls < len(bodies), f"{onnx_calls} ONNX calls for {len(bodies)} concurrent requests: no batching"


@pytest.mark.parametrize("family", ["sklearn", "torch", "ensemble"])
def test_impossible_values_are_refused_by_their_physical_range_and_no_answer_or_metric_is_ever_nan(
        family: str, trained, exported, split, tmp_path) -> None:
    """Every family the release can ship, in a bundle as a release writes it (the spec's physical
    ranges) and in one without them (an older release): values that fit float32 but no machine
    reads are refused naming the feature and its range, and whatever gets through is never
    answered with a null probability nor counted as NaN."""
    from edgewave.serving.app import SiteApp
    from edgewave.serving.bundle import key_id
    from edgewave.serving.metrics import SiteMetrics
    from edgewave.serving.model import ModelSlot
    from edgewave.tasks.release.bundle import build_manifest, load_or_create_signing_key, write_bundle

    key = load_or_create_signing_key(tmp_path / "signing.key")
    trusted = {key_id(key.public_key()): key.public_key()}

    def app_for(physical: dict | None) -> tuple[SiteApp, SiteMetrics]:
        t, e = trained[family], exported[family]
        manifest = build_manifest(
            name="machine-failure", version=1, family=family, model=e.model, int8_model=None,
            train_frame=split.train_frame, threshold=t.metrics.threshold, metrics=t.metrics.as_dict(),
            data_fingerprint=split.data_fingerprint, parity_max_abs_diff=e.parity_max_abs_diff, reference_rows=300,
            physical=physical)
        slot, metrics = ModelSlot(), SiteMetrics("s")
        slot.swap(write_bundle(tmp_path / f"bundle-{physical is not None}", manifest, e.model, None, key), trusted)
        return SiteApp(slot, metrics), metrics

    good = rows(split, 1)[0]
    absurd = [{name: 3.4e38 for name in FEATURES}, {**good, "rotational_speed_rpm": 1e20, "torque_nm": 1e20}]
    app, metrics = app_for(PHYSICAL)
    for row in absurd:
        status, body = asgi_post(app, json.dumps({"instances": [good, row]}).encode())
        name = next(n for n in FEATURES if row[n] != good[n])
        low, high = PHYSICAL[name]
        assert status == 422 and body["error"].startswith(f"{name}: 1 value(s) outside its physical range "
                                                          f"[{low:g}, {high:g}] (row 1: "), body
    status, body = asgi_post(app, json.dumps({"columns": {n: [good[n], 3.4e38] for n in FEATURES}}).encode())
    assert status == 422 and "outside its physical range" in body["error"], body
    assert asgi_post(app, json.dumps({"instances": [good]}).encode())[0] == 200

    older, older_metrics = app_for(None)  # no ranges in the bundle: the model's own output is the last guard
    for row in absurd:
        status, body = asgi_post(older, json.dumps({"instances": [good, row]}).encode())
        if status == 200:
            assert all(0.0 <= p["probability"] <= 1.0 for p in body["predictions"]), body
        else:
            assert status == 422 and "no finite probability for 1 row(s) (first: row 1)" in body["error"], body
        if family != "sklearn":  # an MLP's activations overflow: this is the NaN that was served as "ok"
            assert status == 422, body
    for exposition in (metrics.exposition(), older_metrics.exposition()):
        assert b"NaN" not in exposition
