"""The stack's limit for bench/serving.py: a bare ASGI app on the same uvicorn settings that
reads the body and answers a fixed JSON of the size edgewave answers with, doing no work."""

from __future__ import annotations

BODY = b'{"model":"machine-failure","model_version":1,"predictions":[{"probability":0.0123456789,"label":"ok"}]}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
