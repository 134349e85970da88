from tandem.server import serve

from .main import settings

serve("features.main:app", settings)
