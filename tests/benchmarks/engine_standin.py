"""An engine stand-in for the queueing benchmarks: Triton's HTTP API answered at once, in its
own process (`python -m tests.benchmarks.engine_standin --port P`), on aiohttp.

What it answers, as Triton's HTTP server does:
- `GET /v2/health/live`, `/v2/health/ready`, `/v2/models/<m>/ready` (200, or 400 while not
  ready), `/v2/models/<m>/config` (a plain Python-backend model), `/metrics` (Triton's page,
  laid out by scaler.demo.triton_standin.exposition): what `python -m sidecar` reads;
- `POST /v2/models/<m>[/versions/<v>]/infer`: KServe v2 JSON; every input comes back as an
  output named `OUTPUT<i>` with the same data (so a client can check its own answer), at once,
  or, while `hold` is on, once `hold` is turned off;
- `POST /v2/models/<m>/generate`: one JSON answer; `generate_stream`: SSE, `chunks` events
  (body field, default 10) `interval_ms` apart (default 10), each carrying `sent_at` (unix
  seconds) so the client measures every chunk's delay on the same machine's clock.

Control, for the benchmark (not Triton's): `POST /control?ready=0|1&hold=0|1` sets the state
(readiness turned on stamps `ready_at`, unix seconds, taken here at that moment);
`POST /control?reset=1` forgets the arrivals; `GET /control` gives the state, the arrival
time (unix seconds) of every infer request since, in order, and how many are held, and by
each request's first input value when it arrived and when it was answered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from aiohttp import web

from scaler.demo.triton_standin import ModelFigures, exposition


class EngineStandIn:
    def __init__(self, ready: bool) -> None:
        self.ready = ready
        self.ready_at = time.time() if ready else 0.0
        self.arrivals: list[float] = []
        # The first input's first value -> [arrived, answered] (unix seconds): the client
        # splits each latency into the way in, the engine, and the way back.
        self.by_value: dict[str, list[float]] = {}
        self.held = 0
        self.answered = 0
        self._release = asyncio.Event()
        self._release.set()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v2/health/live", self._live)
        app.router.add_get("/v2/health/ready", self._ready)
        app.router.add_get("/v2/models/{model}/ready", self._ready)
        app.router.add_get("/v2/models/{model}/versions/{version}/ready", self._ready)
        app.router.add_get("/v2/models/{model}/config", self._config)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_post("/v2/models/{model}/infer", self._infer)
        app.router.add_post("/v2/models/{model}/versions/{version}/infer", self._infer)
        app.router.add_post("/v2/models/{model}/generate", self._generate)
        app.router.add_post("/v2/models/{model}/generate_stream", self._generate_stream)
        app.router.add_get("/control", self._state)
        app.router.add_post("/control", self._control)
        return app

    async def _live(self, _: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _ready(self, _: web.Request) -> web.Response:
        return web.Response(status=200 if self.ready else 400)

    async def _config(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        return web.json_response({"name": model, "platform": "", "backend": "python"})

    async def _metrics(self, _: web.Request) -> web.Response:
        page = exposition({"echo": ModelFigures(success=self.answered)}, gpus=0)
        return web.Response(text=page, content_type="text/plain")

    async def _infer(self, request: web.Request) -> web.Response:
        arrived = time.time()
        self.arrivals.append(arrived)
        model = request.match_info["model"]
        if not self.ready:
            return web.json_response({"error": f"Request for unknown model: '{model}'"}, status=400)
        try:
            body = json.loads(await request.read())
            outputs = [
                {
                    "name": f"OUTPUT{i}",
                    "datatype": tensor["datatype"],
                    "shape": tensor["shape"],
                    "data": tensor["data"],
                }
                for i, tensor in enumerate(body["inputs"])
            ]
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"failed to parse the request: {exc}"}, status=400)
        if not self._release.is_set():
            self.held += 1
            try:
                await self._release.wait()
            finally:
                self.held -= 1
        self.answered += 1
        first = outputs[0]["data"] if outputs else None
        if isinstance(first, list) and first:
            self.by_value[str(first[0])] = [arrived, time.time()]
        answer = {
            "model_name": model,
            "model_version": request.match_info.get("version", "1"),
            "id": body.get("id", ""),
            "outputs": outputs,
        }
        return web.json_response(answer)

    async def _generate(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.answered += 1
        return web.json_response(
            {"model_name": request.match_info["model"], "text_output": str(body.get("text_input"))}
        )

    async def _generate_stream(self, request: web.Request) -> web.StreamResponse:
        body: dict[str, Any] = await request.json()
        chunks = int(body.get("chunks", 10))
        interval_s = float(body.get("interval_ms", 10)) / 1000
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for i in range(chunks):
            if i:
                await asyncio.sleep(interval_s)
            event = {"text_output": f"token{i}", "index": i, "sent_at": time.time()}
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        await response.write_eof()
        self.answered += 1
        return response

    async def _control(self, request: web.Request) -> web.Response:
        query = request.query
        if "ready" in query:
            ready = query["ready"] == "1"
            if ready and not self.ready:
                self.ready_at = time.time()
            self.ready = ready
        if "hold" in query:
            if query["hold"] == "1":
                self._release.clear()
            else:
                self._release.set()
        if query.get("reset") == "1":
            self.arrivals.clear()
            self.by_value.clear()
        return await self._state(request)

    async def _state(self, _: web.Request) -> web.Response:
        return web.json_response(
            {
                "ready": self.ready,
                "ready_at": self.ready_at,
                "arrivals": self.arrivals,
                "by_value": self.by_value,
                "held": self.held,
                "answered": self.answered,
            }
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.engine_standin")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--not-ready", action="store_true", help="start not ready")
    args = parser.parse_args()
    standin = EngineStandIn(ready=not args.not_ready)
    web.run_app(standin.app(), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
