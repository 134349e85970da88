from regression.main import RegressionSettings
from tandem.settings import DaprSettings


def test_service_settings_come_from_prefixed_environment_variables(monkeypatch):
    monkeypatch.setenv("REGRESSION_MODELS", "diabetes, maintenance")
    monkeypatch.setenv("REGRESSION_INTRA_OP_THREADS", "2")
    settings = RegressionSettings()
    assert settings.models == ["diabetes", "maintenance"]
    assert settings.intra_op_threads == 2


def test_dapr_settings_use_the_names_dapr_sets(monkeypatch):
    monkeypatch.setenv("DAPR_HTTP_PORT", "3999")
    monkeypatch.setenv("APP_API_TOKEN", "t")
    settings = DaprSettings()
    assert settings.sidecar_url == "http://127.0.0.1:3999"
    assert settings.app_api_token == "t"
