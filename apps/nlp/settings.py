"""The nlp service's settings (NLP_*), read by its routes and by the search index model alike."""

from pydantic_settings import SettingsConfigDict

from tandem.settings import ServiceSettings


class NlpSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NLP_", extra="ignore")

    port: int = 8002
    state_store: str = "statestore"
    max_texts: int = 64
    max_labels: int = 32
    # Zero-shot label scores are a softmax of similarities divided by this: lower is more decisive.
    zero_shot_temperature: float = 0.05
