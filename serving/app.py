"""The inference service: a bare ASGI app over ONNX Runtime.

Bare ASGI rather than a framework because the HTTP path, not the model, is what costs at
the edge (see bench/serving.py); the OpenAPI description is still served at /openapi.json.
No route changes which model is served: swaps come from the agent, in-process.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson

from edgewave.serving.batching import MicroBatcher
from edgewave.serving.bundle import ImageInput
from edgewave.serving.images import DESCRIPTORS, MEDIA_TYPES, decode, decode_batch, descriptors
from edgewave.serving.metrics import HotPath, SiteMetrics
from edgewave.serving.model import LoadedModel, ModelSlot
from edgewave.serving.openapi import openapi
from edgewave.serving.sampler import Sampler
from edgewave.serving.validation import (
    JSON,
    RequestError,
    check_body_headers,
    json_object,
    non_finite_output,
    out_of_range,
    outside_physical,
    parse_predict,
)

log = logging.getLogger("edgewave.serving")
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
LINGER_SECONDS = 2.0  # after a body over the limit: how long the rest of it is read and dropped, at most
LINGER_IDLE_SECONDS = 0.25  # ... and how long a pause in it ends that
ROUTES = {"/v1/predict": "POST", "/v1/model": "GET", "/v1/site": "GET", "/healthz": "GET", "/readyz": "GET", "/metrics": "GET",
          "/openapi.json": "GET"}


class SiteApp:
    def __init__(self, slot: ModelSlot, metrics: SiteMetrics, sampler: Sampler | None = None, *,
                 max_batch: int = 1000, max_body_bytes: int = 4 * 1024 * 1024,
                 reject_out_of_range: bool = False, body_seconds: float = 10.0) -> None:
        self.slot = slot
        self.metrics = metrics
        self.sampler = sampler
        self.max_batch = max_batch
        self.max_body_bytes = max_body_bytes
        self.reject_out_of_range = reject_out_of_range
        self.body_seconds = body_seconds  # a body not received whole within this gets 408 (a slow or stuck client)
        self.batcher = MicroBatcher(metrics.hot.inference)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        start = time.perf_counter()
        path = scope["path"]
        route = path if path in ROUTES else "other"
        try:
            status, body, content_type = await self._handle(scope, receive, path)
        except RequestError as exc:
            status, body, content_type = exc.status, _error(exc.message), JSON
        except Exception:  # a bug must not take the site down or leak a trace to the client
            log.exception("unhandled error on %s %s", scope.get("method"), path)
            status, body, content_type = 500, _error("internal error; see the site log"), JSON
        headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
        if status in (408, 413):  # the rest of the body was never read: the connection cannot carry another request
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe_request(route, status, time.perf_counter() - start)

    async def _handle(self, scope: Scope, receive: Receive, path: str) -> tuple[int, bytes, bytes]:
        method = ROUTES.get(path)
        if method is None:
            raise RequestError(404, f"no route {path}; see /openapi.json")
        if scope["method"] != method and not (method == "GET" and scope["method"] == "HEAD"):
            raise RequestError(405, f"{path} takes {method}, not {scope['method']}")
        if path == "/v1/predict":
            model = self.slot.current  # read once: a swap during this request does not affect it
            if model is None:
                raise RequestError(503, "no verified model loaded yet")
            if model.image is not None:
                media = check_body_headers(scope["headers"], self.max_body_bytes, MEDIA_TYPES)
                return 200, await self._predict_images(model, model.image, await self._body(scope, receive), media), JSON
            check_body_headers(scope["headers"], self.max_body_bytes)
            return 200, await self._predict(model, await self._body(scope, receive)), JSON
        if path in ("/healthz", "/v1/site"):
            return 200, orjson.dumps({"status": "alive", **self._identity()}), JSON
        if path == "/metrics":
            return 200, self.metrics.exposition(), b"text/plain; version=0.0.4; charset=utf-8"
        if path == "/openapi.json":
            return 200, orjson.dumps(openapi(self.slot.current, self.max_batch)), JSON
        model = self.slot.current
        if model is None:
            raise RequestError(503, "no verified model loaded yet")
        if path == "/readyz":
            return 200, orjson.dumps({"status": "ready", **self._identity(), "model": model.manifest.name,
                                      "model_version": model.version, "sha256": model.sha256}), JSON
        manifest = model.manifest.model_dump(mode="json", exclude={"reference": {"columns"}})
        return 200, orjson.dumps(manifest), JSON

    def _identity(self) -> dict[str, str | None]:
        """Who answers (the same as `edgewave_site_info` in /metrics): the control plane checks it."""
        return {"site": self.metrics.site_id, "fleet": self.metrics.fleet_id}

    async def _body(self, scope: Scope, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        deadline = time.monotonic() + self.body_seconds
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise RequestError(408, f"the body was not received within {self.body_seconds:g}s "
                                   f"({size} bytes arrived); the connection is closed") from None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                if message.get("more_body", False):
                    await self._discard_rest(receive)
                raise RequestError(413, f"body exceeds {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _discard_rest(self, receive: Receive) -> None:
        """Read and drop what the client is still sending before the 413 goes out (a lingering close, as
        nginx does): a socket closed with unread bytes makes the kernel answer with a reset, which can
        overtake the answer, and the client sees "connection reset" instead of the reason. Bounded: at
        most another limit's worth of bytes, for at most LINGER_SECONDS, and only while the client keeps
        sending (a pause of LINGER_IDLE_SECONDS ends it): a client that streams gigabytes is cut off."""
        budget, deadline = self.max_body_bytes, time.monotonic() + LINGER_SECONDS
        while budget > 0:
            left = deadline - time.monotonic()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, min(left, LINGER_IDLE_SECONDS)))
            except TimeoutError:
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                return
            budget -= len(message.get("body", b""))

    async def _predict(self, model: LoadedModel, body: bytes) -> bytes:
        x = parse_predict(body, model, self.max_batch)
        refusal = outside_physical(x, model)
        if refusal is not None:
            raise refusal
        hot = self.metrics.hot
        flagged = out_of_range(x, model)
        if flagged:
            for name, n in flagged.items():
                hot.out_of_range[name] = hot.out_of_range.get(name, 0) + n
            if self.reject_out_of_range:
                raise RequestError(422, f"values outside the training range: {flagged} (rows per feature)")
        proba = await self.batcher.predict(model, x)
        refusal = non_finite_output(proba)
        if refusal is not None:
            raise refusal
        if self.sampler is not None:
            self.sampler.offer(x, proba, model.version, model.feature_names)
        negative, positive = model.labels
        threshold = model.threshold
        probabilities = proba.tolist()
        predictions = [{"probability": p, "label": positive if p >= threshold else negative} for p in probabilities]
        n_pos = sum(1 for p in probabilities if p >= threshold)
        hot.rows += len(probabilities)
        hot.predicted[positive] = hot.predicted.get(positive, 0) + n_pos
        hot.positive += n_pos
        hot.predicted[negative] = hot.predicted.get(negative, 0) + len(probabilities) - n_pos
        _observe_confidence(hot, proba, probabilities)
        response: dict[str, Any] = {"model": model.manifest.name, "model_version": model.version,
                                    "predictions": predictions}
        if flagged:
            response["out_of_range"] = flagged
        return orjson.dumps(response)

    async def _predict_images(self, model: LoadedModel, schema: ImageInput, body: bytes, media: bytes) -> bytes:
        """One PNG or JPEG body, or `{"images": [base64, …]}`: per image the defect probability, the
        label (the good class below the threshold, else the likeliest defect) and every class's score.
        Images of one size share an ONNX call, with other requests' too."""
        if media == JSON:
            payload = json_object(body, "'images'")
            if set(payload) != {"images"}:
                raise RequestError(400, f"body: expected an object with 'images' only, got {sorted(payload)}")
            images, files = decode_batch(payload["images"], schema)
        else:
            images, files = [decode(body, schema)], [body]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(image.shape, []).append(i)
        stacked = [np.stack([images[i] for i in members]) for members in groups.values()]
        scored_groups = await asyncio.gather(*(self.batcher.predict(model, pixels) for pixels in stacked))
        order = np.concatenate([np.array(members) for members in groups.values()])
        scored = np.empty((len(images), scored_groups[0].shape[1]), dtype=np.float64)
        scored[order] = np.concatenate(scored_groups)
        classes = model.classes
        scores, embedding = scored[:, :len(classes)], scored[:, len(classes):]
        ok = model.manifest.output.ok_index or 0
        defect = 1.0 - scores[:, ok]
        refusal = non_finite_output(defect)
        if refusal is not None:
            raise refusal
        if self.sampler is not None and self.sampler.draw():
            found = np.empty((len(images), len(DESCRIPTORS)), dtype=np.float32)
            found[order] = np.concatenate([descriptors(pixels) for pixels in stacked])
            self.sampler.offer(np.hstack([found, embedding.astype(np.float32)]), defect, model.version,
                               model.feature_names, drawn=True, images=files, threshold=model.threshold)
        others = scores.copy()
        others[:, ok] = -1.0
        likeliest = others.argmax(axis=1)
        threshold, hot = model.threshold, self.metrics.hot
        predictions = []
        for p, row, worst in zip(defect.tolist(), scores.tolist(), likeliest.tolist(), strict=True):
            label = classes[worst] if p >= threshold else classes[ok]
            hot.predicted[label] = hot.predicted.get(label, 0) + 1
            predictions.append({"defect_probability": p, "label": label,
                                "scores": dict(zip(classes, row, strict=True))})
        hot.rows += len(images)
        hot.positive += int((defect >= threshold).sum())
        _observe_confidence(hot, defect, defect.tolist())
        return orjson.dumps({"model": model.manifest.name, "model_version": model.version,
                             "predictions": predictions})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def _observe_confidence(hot: HotPath, proba: np.ndarray, probabilities: list[float]) -> None:
    """The confidence histogram (max(p, 1 - p)): a plain loop for a few values, numpy for a batch."""
    if len(probabilities) <= 16:
        for p in probabilities:
            hot.confidence.observe(p if p >= 0.5 else 1.0 - p)
        return
    confidence = np.maximum(proba, 1 - proba)
    counts = np.bincount(np.searchsorted(hot.confidence.bounds, confidence), minlength=len(hot.confidence.counts))
    hot.confidence.add(counts.tolist(), float(confidence.sum()))


def _error(message: str) -> bytes:
    return orjson.dumps({"error": message})
