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
- anything else: 200 with a JSON echo of what arrived
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse


def create_app() -> FastAPI:
    delay_seconds = float(os.environ.get("VS_FAULTY_DELAY_SECONDS", "5"))
    app = FastAPI()

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/classify")
    async def classify(request: Request, model: str = "") -> Response:
        body = await request.body()
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

    return app


async def _chunks_then_failure() -> AsyncIterator[bytes]:
    yield b'{"predictions": ['
    # uvicorn closes the connection when a streaming body raises mid-response.
    raise RuntimeError("faulty backend dropped the response on purpose")
