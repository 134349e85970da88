"""The pipelines service: model graphs declared in YAML, served as OIP models."""

from tandem.server import serve

from .main import settings

serve("pipelines.main:app", settings)
