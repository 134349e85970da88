"""Each built model against its reference: accuracy floor and agreement with the source model."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from sklearn.metrics import r2_score

MODELS = Path(__file__).resolve().parents[2] / "models"

sys.path.insert(0, str(MODELS))
from recipes import diabetes  # noqa: E402


@pytest.fixture(scope="module")
def card(model_repository):
    return yaml.safe_load((model_repository / "diabetes" / "1" / "model.yaml").read_text())


def test_diabetes_onnx_agrees_with_scikit_learn_and_beats_the_floor(model_repository, card):
    _, x_test, _, y_test = diabetes.split(card["provenance"]["seed"])
    reference = diabetes.train(card["provenance"]["seed"]).predict(x_test)
    session = ort.InferenceSession(str(model_repository / "diabetes" / "1" / "model.onnx"))
    served = session.run(None, {"input": x_test})[0].ravel()
    np.testing.assert_allclose(served, reference, rtol=1e-5, atol=1e-3)
    assert r2_score(y_test, served) >= 0.3
    assert card["metrics"]["r2"] == pytest.approx(r2_score(y_test, served), abs=1e-3)


def test_the_card_records_provenance(card, model_repository):
    provenance = card["provenance"]
    artefact = (model_repository / "diabetes" / "1" / "model.onnx").read_bytes()
    assert provenance["artefacts_sha256"]["model.onnx"] == hashlib.sha256(artefact).hexdigest()
    assert set(provenance["packages"]) >= {"scikit-learn", "skl2onnx", "onnxruntime"}
    assert card["data"]["sha256"] and provenance["sources_sha256"]


def test_builds_are_reproducible(tmp_path, card):
    subprocess.run(
        [sys.executable, str(MODELS / "build.py"), "--out", str(tmp_path), "diabetes"],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},  # a different string hashing must not change the bytes
    )
    rebuilt = (tmp_path / "diabetes" / "1" / "model.onnx").read_bytes()
    assert hashlib.sha256(rebuilt).hexdigest() == card["provenance"]["artefacts_sha256"]["model.onnx"]
