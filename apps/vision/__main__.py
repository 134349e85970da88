from tandem.server import serve

from .main import settings

serve("vision.main:app", settings)
