"""The gateway: one entry point for every model of every service."""

from tandem.server import serve

from .main import settings

serve("gateway.main:app", settings)
