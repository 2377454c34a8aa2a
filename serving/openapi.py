"""The service's OpenAPI description, generated from the served bundle's input schema."""

from __future__ import annotations

from typing import Any

from edgewave.serving.bundle import ImageInput, InputSchema
from edgewave.serving.model import LoadedModel

IDENTITY = {"type": "object", "required": ["site", "fleet"],
            "properties": {"site": {"type": "string"}, "fleet": {"type": "string", "nullable": True}}}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Malformed JSON or body, or an object repeating a key", 408: "The body did not arrive in time",
            413: "Batch, body or image too large (a declared length: at once; an image's pixels: before decoding)",
            415: "Not a media type the model takes, or an encoding or charset the site does not decode",
            422: "Rows or images do not match the input schema (a value outside its physical range, an image's "
                 "mode or size), or the model gives no finite probability", 503: "No verified model loaded yet"}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": ERROR}}} for c in codes}


def _table_predict(model: LoadedModel | None, max_batch: int) -> dict[str, Any]:
    """/v1/predict of a table model: rows as `instances` or `columns`."""
    names = list(model.feature_names) if model else []
    number: dict[str, dict[str, Any]] = {  # each feature's physical range, where the bundle carries one
        f.name: {"type": "number", **({"minimum": f.valid_min} if f.valid_min is not None else {}),
                 **({"maximum": f.valid_max} if f.valid_max is not None else {})}
        for f in (model.manifest.input.features if model and isinstance(model.manifest.input, InputSchema) else [])}
    row = {"type": "object", "additionalProperties": False, "required": names,
           "properties": {n: number[n] for n in names}}
    request = {
        "oneOf": [
            {"type": "object", "additionalProperties": False, "required": ["instances"],
             "properties": {"instances": {"type": "array", "minItems": 1, "maxItems": max_batch, "items": row}}},
            {"type": "object", "additionalProperties": False, "required": ["columns"],
             "properties": {"columns": {"type": "object", "additionalProperties": False, "required": names,
                                        "properties": {n: {"type": "array", "items": number[n], "minItems": 1,
                                                           "maxItems": max_batch} for n in names}}}},
        ]
    }
    prediction = {"type": "object", "required": ["probability", "label"],
                  "properties": {"probability": {"type": "number", "minimum": 0, "maximum": 1},
                                 "label": {"type": "string"}}}
    response = {"type": "object", "required": ["model", "model_version", "predictions"],
                "properties": {"model": {"type": "string"}, "model_version": {"type": "integer"},
                               "predictions": {"type": "array", "items": prediction}}}
    return {"operationId": "predict",
            "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
            "responses": {"200": {"description": "Failure probability and label per row",
                                  "content": {"application/json": {"schema": response}}},
                          **_errors(400, 408, 413, 415, 422, 503)}}


def _image_predict(schema: ImageInput, classes: tuple[str, ...]) -> dict[str, Any]:
    """/v1/predict of an image model: one PNG or JPEG as the body, or a JSON batch of base64 images."""
    scores = {"type": "object", "required": list(classes),
              "properties": {c: {"type": "number", "minimum": 0, "maximum": 1} for c in classes}}
    prediction = {"type": "object", "required": ["defect_probability", "label", "scores"],
                  "properties": {"defect_probability": {"type": "number", "minimum": 0, "maximum": 1},
                                 "label": {"type": "string", "enum": list(classes)}, "scores": scores}}
    response = {"type": "object", "required": ["model", "model_version", "predictions"],
                "properties": {"model": {"type": "string"}, "model_version": {"type": "integer"},
                               "predictions": {"type": "array", "items": prediction}}}
    binary = {"schema": {"type": "string", "format": "binary", "maxLength": schema.max_bytes}}
    batch = {"type": "object", "additionalProperties": False, "required": ["images"],
             "properties": {"images": {"type": "array", "minItems": 1, "maxItems": schema.max_batch,
                                       "items": {"type": "string", "format": "byte"}}}}
    return {"operationId": "predict",
            "description": f"{schema.width}x{schema.height} pixels, {schema.channels} channel(s) (mode {schema.mode}), "
                           f"within a share of {schema.size_tolerance:g} of that size (resized by the model); "
                           f"at most {schema.max_pixels} pixels and {schema.max_bytes} bytes per image.",
            "requestBody": {"required": True, "content": {"image/png": binary, "image/jpeg": binary,
                                                           "application/json": {"schema": batch}}},
            "responses": {"200": {"description": "Defect probability, label and every class's score per image",
                                  "content": {"application/json": {"schema": response}}},
                          **_errors(400, 408, 413, 415, 422, 503)}}


def openapi(model: LoadedModel | None, max_batch: int) -> dict[str, Any]:
    image = model.image if model else None
    predict = _image_predict(image, model.classes) if model and image else _table_predict(model, max_batch)
    what = "Defect detection on camera images" if image else "Failure prediction. Inputs are raw sensor readings"
    json_body = {"type": "object"}
    return {
        "openapi": "3.0.3",
        "info": {"title": "edgewave edge site", "version": str(model.version) if model else "none",
                 "description": f"{what}, at an edge site."},
        "paths": {
            "/v1/predict": {"post": predict},
            "/v1/model": {"get": {"operationId": "model", "responses": {
                "200": {"description": "Manifest of the served bundle",
                        "content": {"application/json": {"schema": json_body}}}, **_errors(503)}}},
            "/v1/site": {"get": {"operationId": "site", "responses": {"200": {
                "description": "Who answers: this site's id and its fleet's (also on /healthz, /readyz and in "
                               "/metrics as edgewave_site_info)",
                "content": {"application/json": {"schema": IDENTITY}}}}}},
            "/healthz": {"get": {"operationId": "healthz", "responses": {"200": {"description": "Alive",
                "content": {"application/json": {"schema": IDENTITY}}}}}},
            "/readyz": {"get": {"operationId": "readyz", "responses": {
                "200": {"description": "A verified model is loaded and warmed up"}, **_errors(503)}}},
            "/metrics": {"get": {"operationId": "metrics", "responses": {
                "200": {"description": "Prometheus metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
    }
