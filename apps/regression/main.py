"""The regression service's app: serves its tabular models over the Open Inference Protocol v2."""

from pydantic_settings import SettingsConfigDict

from tandem.server import make_app
from tandem.settings import ModelNames, ServiceSettings


class RegressionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REGRESSION_", extra="ignore")

    port: int = 8003
    models: ModelNames = ["diabetes"]


settings = RegressionSettings()
app = make_app("regression", settings)
