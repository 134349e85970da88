from tandem.server import serve

from .main import settings

serve("alerts.main:app", settings)
