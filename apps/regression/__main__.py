from tandem.server import serve

from .main import settings

serve("regression.main:app", settings)
