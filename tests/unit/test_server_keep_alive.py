"""Every Tandem app keeps idle connections open longer than its sidecar does (daprd's app channel closes its idle
connections after 90 s): were the app to close first, a request the sidecar sent on such a connection at that
moment would fail with EOF, as one did in the pipeline's tests with uvicorn's default of 5 s."""

import uvicorn

from tandem import server
from tandem.settings import AppSettings

DAPR_IDLE_CONNECTION_SECONDS = 90  # Go's http.DefaultTransport.IdleConnTimeout, which daprd's app channel keeps


def test_serve_keeps_idle_connections_longer_than_the_sidecar(monkeypatch):
    started: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.update(options))
    server.serve("alerts.main:app", AppSettings())
    assert started["timeout_keep_alive"] > DAPR_IDLE_CONNECTION_SECONDS
