"""The regression service: tabular models over the Open Inference Protocol v2, and rows of named
features in plain JSON for people."""

from pydantic_settings import SettingsConfigDict

from tandem.people import people_router
from tandem.server import make_app
from tandem.settings import ServiceSettings


class RegressionSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REGRESSION_", extra="ignore")

    port: int = 8003


settings = RegressionSettings()


EXAMPLE = {
    "rows": [
        {
            "age": 0.04,
            "sex": 0.05,
            "bmi": 0.06,
            "bp": 0.02,
            "s1": -0.04,
            "s2": -0.03,
            "s3": -0.04,
            "s4": 0.0,
            "s5": 0.02,
            "s6": -0.02,
        }
    ]
}


app = make_app("regression", settings, routers=(people_router(settings, EXAMPLE),))
