"""The app side of Dapr's app API token: refuse calls that did not come through our sidecar.

When APP_API_TOKEN is set, the sidecar adds `dapr-api-token: <token>` to every call it makes to the
app; anything without it reached the app some other way. Nothing in the Dapr SDK checks it for us.
"""

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

# Probes (kubelet, the sidecar's app health check), scrapes and the API docs are open on purpose:
# they carry no data and Kubernetes probes cannot send the token.
OPEN_PATHS = frozenset(
    {
        "/v2/health/live",
        "/v2/health/ready",
        "/metrics",
        "/docs",
        "/docs/oauth2-redirect",
        "/openapi.json",
    }
)

_REFUSAL = json.dumps({"error": "missing or wrong dapr-api-token: call this app through its Dapr sidecar"}).encode()


class AppTokenMiddleware:
    """Checks the token on every path but the open ones; with `only_under`, only on paths under those prefixes
    (an app that clients call directly, such as the gateway, guards just what its sidecar calls)."""

    def __init__(self, app: ASGIApp, token: str, only_under: tuple[str, ...] | None = None):
        self.app = app
        self.token = token.encode()
        self.only_under = only_under

    def _guarded(self, path: str) -> bool:
        if path in OPEN_PATHS:
            return False
        return self.only_under is None or path.startswith(self.only_under)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.token or not self._guarded(scope["path"]):
            await self.app(scope, receive, send)
            return
        sent = next((value for name, value in scope["headers"] if name == b"dapr-api-token"), b"")
        if hmac.compare_digest(sent, self.token):
            await self.app(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(_REFUSAL)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _REFUSAL})
