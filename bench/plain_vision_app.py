"""The baseline of bench/vision.py: the image service a user would write in an afternoon.

FastAPI, Pillow and ONNX Runtime with their defaults: the raw PNG or JPEG body decoded, the
model run on one image per request, the answer as JSON. The model path comes from
EDGEWAVE_BENCH_MODEL. Run as `uvicorn bench.plain_vision_app:app`.
"""

from __future__ import annotations

import io
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from PIL import Image

app = FastAPI()
session = ort.InferenceSession(os.environ["EDGEWAVE_BENCH_MODEL"], providers=["CPUExecutionProvider"])
CLASSES = os.environ.get("EDGEWAVE_BENCH_CLASSES", "good,scratch,pit,crack,stain").split(",")


@app.post("/predict")
async def predict(request: Request) -> dict:
    image = Image.open(io.BytesIO(await request.body()))
    pixels = np.asarray(image, dtype=np.uint8)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    probabilities, _ = session.run(None, {"image": pixels[None]})
    scores = probabilities[0].tolist()
    return {"defect_probability": 1 - scores[0], "label": CLASSES[int(np.argmax(scores))],
            "scores": dict(zip(CLASSES, scores))}


@app.get("/health")
async def health() -> dict:
    return {"status": "ok"}
