"""The gateway's health answers, open to load balancers: /health (readiness: the models in
STRATUS_PRELOAD are loaded) and /ping (RunPod's load-balancer check, with its codes)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from common.admission import InferenceGate
from common.auth import ApiKeyAuth
from common.errors import EngineUnavailable, Unauthorized
from common.store import ModelStore


class Probes:
    def __init__(self, store: ModelStore, auth: ApiKeyAuth, gate: InferenceGate) -> None:
        self.store, self.auth, self.gate = store, auth, gate

    async def health(self, request: Request) -> Response:
        """Open, for load balancers and health checks: 200 when the models this process
        preloads (STRATUS_PRELOAD) are loaded, 503 while they load or when one could not be.
        What is loaded, running and failed only with a key (when keys are set): model names
        tell an outsider what a deployment serves."""
        readiness = self.store.readiness()
        status = 200 if readiness.state == "ready" else 503
        state = {"ready": "ok", "loading": "loading", "failed": "unavailable"}[readiness.state]
        try:
            self.auth.check(request.headers.get("authorization"), request.headers.get("x-api-key"))
        except Unauthorized:
            return JSONResponse({"status": state}, status_code=status)
        details = {
            "status": state,
            "active": self.gate.active,
            "waiting": self.gate.waiting,
            "loaded": self.store.loaded(),
        }
        if readiness.failed:
            details["failed"] = readiness.failed
        return JSONResponse(details, status_code=status)

    async def ping(self, request: Request) -> Response:
        """RunPod's load-balancer health check, with the codes RunPod documents: 204 while the
        preloaded models load (initializing), 200 once they have (healthy), anything else is
        unhealthy: a 503 in the envelope when one could not be loaded (the log says which)."""
        readiness = self.store.readiness()
        if readiness.state == "loading":
            return Response(status_code=204)
        if readiness.state == "ready":
            return JSONResponse({"status": "healthy"})
        error = EngineUnavailable("A model this worker serves could not be loaded; see its log.")
        return JSONResponse(error.envelope(), status_code=error.status)
