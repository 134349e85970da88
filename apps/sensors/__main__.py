from tandem.server import serve

from .main import settings

serve("sensors.main:app", settings)
