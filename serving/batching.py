"""Micro-batching: requests that are ready in the same event-loop turn share one ONNX call.

On a small edge box the fixed cost of an ONNX Runtime call (and what it does to the CPU
caches) dominates a single-row request; with several connections, the rows of all requests
parsed in one loop turn are scored together and each request gets its slice back. Nothing
waits for a batch to fill: the flush runs as soon as the loop has handled what is ready, so a
lone request pays only one extra loop hop. A request keeps the model it started with, so a
swap between parse and flush does not change its answer.

An image model's call is the other way round: a CNN costs ~200 µs an image, several times the
HTTP work around it. So it runs on one inference thread (ONNX Runtime releases the GIL) while
the loop reads and decodes the next requests on the other core; what arrives meanwhile is
scored as the next batch when the thread is free (bench/vision.py measured the difference).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edgewave.serving.metrics import Buckets
from edgewave.serving.model import LoadedModel

Item = tuple[LoadedModel, np.ndarray, asyncio.Future]


class MicroBatcher:
    def __init__(self, inference_seconds: Buckets) -> None:
        self.inference_seconds = inference_seconds
        self._pending: list[Item] = []
        self._scheduled = False
        self._busy = False  # the inference thread is scoring images; the next batch waits for it
        self._thread: ThreadPoolExecutor | None = None  # made on the first image request

    async def predict(self, model: LoadedModel, x: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((model, x, future))
        self._schedule(loop)
        return await future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._scheduled and not self._busy:
            self._scheduled = True
            loop.call_soon(self._flush)

    def _score(self, model: LoadedModel, x: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        scored = model.score(x)
        self.inference_seconds.observe(time.perf_counter() - t0)
        return scored

    @staticmethod
    def _timed(model: LoadedModel, x: np.ndarray) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        return model.score(x), time.perf_counter() - t0

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        groups: dict[tuple[int, tuple[int, ...]], list[Item]] = {}
        for item in batch:  # images of one size share a call; rows of a table always do
            groups.setdefault((id(item[0]), item[1].shape[1:]), []).append(item)
        images = [items for items in groups.values() if items[0][0].image is not None]
        for items in groups.values():
            if items[0][0].image is None:
                try:
                    _deliver(items, self._score(items[0][0], _stacked(items)))
                except Exception as exc:  # hand the failure to every waiting request
                    _fail(items, exc)
        if images:
            self._busy = True
            loop = asyncio.get_running_loop()
            if self._thread is None:
                self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
            job = loop.run_in_executor(self._thread, self._score_all, images)
            job.add_done_callback(lambda done: self._scored(loop, images, done))

    def _score_all(self, groups: list[list[Item]]) -> list[tuple[np.ndarray, float] | Exception]:
        """On the inference thread: every group's call and its time (observed back on the loop, which
        alone writes the metrics); a failing group fails only its own requests."""
        results: list[tuple[np.ndarray, float] | Exception] = []
        for items in groups:
            try:
                results.append(self._timed(items[0][0], _stacked(items)))
            except Exception as exc:  # noqa: BLE001 - handed to the group's requests below
                results.append(exc)
        return results

    def _scored(self, loop: asyncio.AbstractEventLoop, groups: list[list[Item]], done: asyncio.Future) -> None:
        self._busy = False
        outcome = done.exception() or done.result()
        for index, items in enumerate(groups):
            result = outcome if isinstance(outcome, BaseException) else outcome[index]
            if isinstance(result, BaseException):
                _fail(items, result)
            else:
                self.inference_seconds.observe(result[1])
                _deliver(items, result[0])
        if self._pending:
            self._schedule(loop)


def _stacked(items: list[Item]) -> np.ndarray:
    return items[0][1] if len(items) == 1 else np.concatenate([i[1] for i in items])


def _deliver(items: list[Item], scored: np.ndarray) -> None:
    start = 0
    for _, rows, future in items:
        if not future.done():  # the client may have gone away
            future.set_result(scored[start : start + len(rows)])
        start += len(rows)


def _fail(items: list[Item], exc: BaseException) -> None:
    for _, _, future in items:
        if not future.done():
            future.set_exception(exc)
