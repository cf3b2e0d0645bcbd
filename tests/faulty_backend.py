"""A small real backend that fails on purpose, for gateway tests of timeouts and 5xx.

The classifier cannot be made slow or broken on request, so the gateway tests
point the gateway at this app instead. `POST /v1/classify` picks its failure
from the `model` query parameter:

- `slow`: sleeps `VS_FAULTY_DELAY_SECONDS` (default 5) before returning 200
- `crash`: 500 with the common error body
- `busy`: 503 with `Retry-After: 7`
- `not-json`: 200 with a plain-text body
- `rate-limited`: 429 with a plain-text body and `Retry-After: 3`
- `drop`: starts a 200 response and closes the connection before the body ends
- `flaky-N-KEY`: 503 without Retry-After for the first N calls with this name, then 200
- anything else: 200 with a JSON echo of what arrived

`GET /calls?model=NAME` returns how many classify calls named NAME arrived, and
`GET /in-flight` how many classify calls are running right now.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse


def create_app() -> FastAPI:
    delay_seconds = float(os.environ.get("VS_FAULTY_DELAY_SECONDS", "5"))
    app = FastAPI()
    calls: Counter[str] = Counter()
    in_flight = {"classify": 0}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/calls")
    async def call_count(model: str) -> dict[str, int]:
        return {"calls": calls[model]}

    @app.get("/in-flight")
    async def in_flight_count() -> dict[str, int]:
        return {"in_flight": in_flight["classify"]}

    @app.post("/v1/classify")
    async def classify(request: Request, model: str = "") -> Response:
        calls[model] += 1
        in_flight["classify"] += 1
        try:
            return await _respond(request, model, calls[model], delay_seconds)
        finally:
            in_flight["classify"] -= 1

    return app


async def _respond(request: Request, model: str, call: int, delay_seconds: float) -> Response:
    body = await request.body()
    if model.startswith("flaky-"):
        failures = int(model.split("-")[1])
        if call <= failures:
            error = {"code": "service_unavailable", "message": "warming up"}
            return JSONResponse({"error": error}, status_code=503)
    if model == "slow":
        await asyncio.sleep(delay_seconds)
    if model == "crash":
        error = {"code": "internal_error", "message": "secret internal detail"}
        return JSONResponse({"error": error, "request_id": None}, status_code=500)
    if model == "busy":
        error = {"code": "service_unavailable", "message": "loading"}
        return JSONResponse({"error": error}, status_code=503, headers={"Retry-After": "7"})
    if model == "not-json":
        return PlainTextResponse("not json")
    if model == "drop":
        return StreamingResponse(_chunks_then_failure(), media_type="application/json")
    if model == "rate-limited":
        return PlainTextResponse("slow down", status_code=429, headers={"Retry-After": "3"})
    echo = {
        "body_bytes": len(body),
        "content_type": request.headers.get("content-type"),
        "request_id": request.headers.get("x-request-id"),
        "query": dict(request.query_params),
    }
    return JSONResponse(echo)


async def _chunks_then_failure() -> AsyncIterator[bytes]:
    yield b'{"predictions": ['
    # uvicorn closes the connection when a streaming body raises mid-response.
    raise RuntimeError("faulty backend dropped the response on purpose")
