"""The fleet's tabular models against their references: ONNX agrees with scikit-learn, accuracy floors, reproducibility.

The four models are built into a temporary repository, so these tests check the recipes as they are now, whatever
the state of models/.
"""

import hashlib
import os
import subprocess
import sys
from collections import deque
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from sklearn.metrics import r2_score, roc_auc_score

from tandem import fleet
from tandem.protocol import DATATYPES
from tandem.repository import load_version

MODELS = Path(__file__).resolve().parents[2] / "models"

sys.path.insert(0, str(MODELS))
from recipes import clusters, maintenance_failure, maintenance_rul, reduction  # noqa: E402

RECIPES = {recipe.NAME: recipe for recipe in (maintenance_rul, maintenance_failure, clusters, reduction)}


def build(out: Path, hash_seed: str) -> Path:
    """Builds the four models into `out`; the string hash seed varies between builds, as it does between processes."""
    recipe_modules = [recipe.__name__.rpartition(".")[2] for recipe in RECIPES.values()]
    command = [sys.executable, str(MODELS / "build.py"), "--out", str(out), *recipe_modules]
    subprocess.run(command, check=True, env={**os.environ, "PYTHONHASHSEED": hash_seed})
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("models"), hash_seed="1")


def card(repository: Path, name: str) -> dict:
    return yaml.safe_load((repository / name / "1" / "model.yaml").read_text())


def served(repository: Path, name: str, features: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(repository / name / "1" / "model.onnx"))
    return session.run(None, {"input": features})


def reference(name: str, seed: int):
    """The recipe's scikit-learn model, trained again, and its held-out rows."""
    recipe = RECIPES[name]
    _, test = recipe.split(seed)
    return recipe.train(seed), test


def test_maintenance_rul_agrees_with_scikit_learn_and_learns_without_being_trivial(repository):
    model_card = card(repository, "maintenance-rul")
    model, test = reference("maintenance-rul", model_card["provenance"]["seed"])
    (rul,) = served(repository, "maintenance-rul", test.features)
    np.testing.assert_allclose(rul.ravel(), model.predict(test.features), rtol=1e-5, atol=1e-3)
    truth = maintenance_rul.target(test.rul)
    assert 0.6 <= r2_score(truth, rul.ravel()) <= 0.98
    metrics = model_card["metrics"]
    assert metrics["r2"] == pytest.approx(r2_score(truth, rul.ravel()), abs=1e-3)
    assert metrics["rmse"] < 0.5 * metrics["baseline"]["rmse"]
    assert metrics["mae"] < 0.5 * metrics["baseline"]["mae"]


def test_maintenance_rul_follows_a_held_out_machine_to_its_failure(repository):
    seed = card(repository, "maintenance-rul")["provenance"]["seed"]
    machine = fleet.make_machine(seed, maintenance_rul.TRAIN_MACHINES)  # the first held-out machine
    window = deque(maxlen=fleet.WINDOW)
    predictions = {}
    for reading in fleet.readings(machine):
        window.append(reading.values)
        features = fleet.window_features(window)
        if features is not None:
            predictions[reading.rul] = served(repository, "maintenance-rul", features[None, :])[0].item()
    assert len(predictions) == machine.lifetime - fleet.WINDOW + 1
    assert predictions[0] < 25  # at the failing cycle
    assert predictions[max(predictions)] > 90  # early in its life, when all one can say is "plenty"


def test_maintenance_failure_agrees_with_scikit_learn_and_ranks_failing_machines_first(repository):
    model_card = card(repository, "maintenance-failure")
    model, test = reference("maintenance-failure", model_card["provenance"]["seed"])
    label, probabilities = served(repository, "maintenance-failure", test.features)
    np.testing.assert_allclose(probabilities, model.predict_proba(test.features), atol=1e-5)
    np.testing.assert_array_equal(label, model.predict(test.features))
    truth = maintenance_failure.target(test.rul)
    assert roc_auc_score(truth, probabilities[:, 1]) >= 0.95
    assert (
        model_card["labels"] == ["ok", "failing"] and model_card["parameters"]["horizon"] == maintenance_failure.HORIZON
    )
    metrics = model_card["metrics"]
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(truth, probabilities[:, 1]), abs=1e-4)
    assert metrics["precision"] >= 0.75 and metrics["recall"] >= 0.75
    assert 0.1 < metrics["base_rate"] < 0.3
    assert metrics["accuracy"] > 1 - metrics["base_rate"] + 0.05  # clearly better than "always ok"


def test_clusters_agree_with_scikit_learn_and_are_numbered_by_remaining_life(repository):
    model_card = card(repository, "clusters")
    model, test = reference("clusters", model_card["provenance"]["seed"])
    cluster, distances = served(repository, "clusters", test.features)
    np.testing.assert_array_equal(cluster, model.predict(test.features))
    np.testing.assert_allclose(distances, model.transform(test.features), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(cluster, distances.argmin(axis=1))
    mean_rul = [test.rul[cluster == index].mean() for index in range(clusters.CLUSTERS)]
    assert mean_rul[0] == max(mean_rul) and mean_rul[-1] == min(mean_rul)
    metrics = model_card["metrics"]
    assert metrics["n_init"] == clusters.N_INIT and metrics["inertia"] > 0
    assert metrics["silhouette"] > 0.05
    assert metrics["held_out"][-1]["near_failure"] > 0.5  # one cluster holds the machines close to failure


def test_reduction_agrees_with_scikit_learn_and_its_first_axis_is_wear(repository):
    model_card = card(repository, "reduction")
    model, test = reference("reduction", model_card["provenance"]["seed"])
    (projection,) = served(repository, "reduction", test.features)
    np.testing.assert_allclose(projection, model.transform(test.features), rtol=1e-4, atol=1e-4)
    ratios = model_card["metrics"]["explained_variance_ratio"]
    assert len(ratios) == reduction.COMPONENTS and ratios == sorted(ratios, reverse=True)
    assert ratios[0] > 0.15
    correlation = np.corrcoef(projection[:, 0], np.minimum(test.rul, reduction.RUL_CAP))[0, 1]
    assert abs(correlation) > 0.8


@pytest.mark.parametrize("name", RECIPES)
def test_the_card_describes_what_the_served_model_takes_and_gives(repository, name):
    model_card = card(repository, name)
    assert model_card["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, len(fleet.FEATURES)], "features": list(fleet.FEATURES)}
    ]
    assert model_card["parameters"]["window"] == fleet.WINDOW and model_card["service"] == "regression"
    model = load_version(repository / name / "1").runtime
    rows = fleet.table(fleet.make_fleet(1, 1)).features[:5]
    outputs = model.predict({"input": rows})
    for spec in model_card["outputs"]:
        array = outputs[spec["name"]]
        assert array.dtype == DATATYPES[spec["datatype"]], spec["name"]
        assert [5 if want == -1 else want for want in spec["shape"]] == list(array.shape), spec["name"]


def test_builds_are_reproducible(repository, tmp_path):
    rebuilt = build(tmp_path, hash_seed="2")
    for name in RECIPES:
        artefact = sha256(rebuilt / name / "1" / "model.onnx")
        assert artefact == sha256(repository / name / "1" / "model.onnx"), name
        assert artefact == card(repository, name)["provenance"]["artefacts_sha256"]["model.onnx"], name
        assert card(rebuilt, name)["data"]["sha256"] == card(repository, name)["data"]["sha256"], name
