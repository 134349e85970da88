from tandem.server import serve

from .main import settings

serve("nlp.main:app", settings)
