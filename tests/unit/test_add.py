"""`tandem add` and `tandem check` as a user runs them: an ONNX file, a scikit-learn regressor and classifier (with
and without feature names) become model folders whose answers equal the source's; `check` lists every problem.

Bad inputs tried: an artefact that is not a model (random bytes named .onnx, a text file), a pickle that is not an
estimator, a pickle that does not unpickle, an unfitted estimator, a folder without config.json, a missing file, a
name that could leave the repository, a version that exists already; for `check`: a folder without a card, a
card with a typo, an ONNX graph whose shapes contradict its card. Nothing is left behind by a failed add."""

import pickle
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import yaml
from onnx import TensorProto, helper
from sklearn.datasets import load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import Ridge

from tandem.add import AddError, add
from tandem.card import ModelCard

TANDEM = str(Path(sys.executable).parent / "tandem")


def tandem(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([TANDEM, *args], cwd=cwd, capture_output=True, text=True)


def onnx_file(path: Path, width: int = 3) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["rows", width])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_an_onnx_file_becomes_a_model_with_the_graphs_tensors(tmp_path: Path):
    folder, model = add(onnx_file(tmp_path / "relu.onnx"), "relu", tmp_path / "repo")
    card = ModelCard.read(folder)
    assert [(t.name, t.datatype, t.shape) for t in card.inputs] == [("x", "FP32", [-1, 3])]
    assert [(t.name, t.datatype, t.shape) for t in card.outputs] == [("y", "FP32", [-1, 3])]
    assert card.provenance.artefacts_sha256.keys() == {"model.onnx"}
    rows = np.array([[-1.0, 0.5, 2.0]], np.float32)
    np.testing.assert_array_equal(model.runtime.predict({"x": rows})["y"], [[0.0, 0.5, 2.0]])


def test_a_scikit_learn_regressor_answers_as_the_estimator_does(tmp_path: Path):
    features, target = load_diabetes(return_X_y=True)
    estimator = Ridge().fit(features, target)
    joblib.dump(estimator, tmp_path / "ridge.joblib")
    folder, model = add(tmp_path / "ridge.joblib", "ridge", tmp_path / "repo")
    assert (folder / "estimator.joblib").is_file() and (folder / "model.onnx").is_file()
    card = ModelCard.read(folder)
    assert card.inputs[0].shape == [-1, 10] and card.inputs[0].features is None
    rows = features[:5].astype(np.float32)
    (output,) = model.runtime.predict({"input": rows}).values()
    np.testing.assert_allclose(output.ravel(), estimator.predict(rows), rtol=1e-4)


def test_a_scikit_learn_classifier_keeps_feature_names_and_labels(tmp_path: Path):
    features, target = load_iris(return_X_y=True, as_frame=True)
    estimator = RandomForestClassifier(n_estimators=5, random_state=0).fit(features, target)
    with (tmp_path / "forest.pkl").open("wb") as file:
        pickle.dump(estimator, file)
    folder, model = add(tmp_path / "forest.pkl", "forest", tmp_path / "repo", "3")
    card = ModelCard.read(folder)
    assert card.version == "3" and card.inputs[0].features == list(features.columns)
    assert card.labels == ["0", "1", "2"]
    table = features.iloc[::10]
    outputs = model.runtime.predict({"input": table.to_numpy(np.float32)})
    np.testing.assert_array_equal(outputs["label"], estimator.predict(table))
    np.testing.assert_allclose(outputs["probabilities"], estimator.predict_proba(table), atol=1e-6)


def test_the_command_prints_a_curl_that_calls_the_model(tmp_path: Path):
    onnx_file(tmp_path / "relu.onnx")
    added = tandem("add", "relu.onnx", "--name", "relu", "--repository", "my-models", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert "tandem serve my-models" in added.stdout
    assert "curl -s localhost:8080/v2/models/relu/infer -d '" in added.stdout
    assert "output y: FP32 [-1, 3]; for the sample: [0.0, 0.0, 0.0]" in added.stdout


def bad_artefacts(tmp_path: Path) -> list[tuple[Path, str]]:
    (tmp_path / "noise.onnx").write_bytes(np.random.default_rng(0).bytes(200))
    (tmp_path / "notes.txt").write_text("not a model")
    with (tmp_path / "settings.pkl").open("wb") as file:
        pickle.dump({"alpha": 1.0}, file)
    (tmp_path / "torn.pkl").write_bytes(b"\x80\x04not really")
    joblib.dump(Ridge(), tmp_path / "unfitted.joblib")
    (tmp_path / "folder").mkdir()
    return [
        (tmp_path / "noise.onnx", "not an ONNX model onnxruntime can load"),
        (tmp_path / "notes.txt", "not a model tandem knows"),
        (tmp_path / "settings.pkl", "holds a builtins.dict, not a fitted scikit-learn estimator"),
        (tmp_path / "torn.pkl", "not a pickle this Python can read"),
        (tmp_path / "unfitted.joblib", "not a fitted scikit-learn estimator"),
        (tmp_path / "folder", "has no config.json"),
        (tmp_path / "absent.onnx", "no such file or folder"),
    ]


def test_what_is_not_a_model_is_refused_naming_the_file_and_nothing_is_left_behind(tmp_path: Path):
    repository = tmp_path / "repo"
    for artefact, message in bad_artefacts(tmp_path):
        with pytest.raises(AddError) as refused:
            add(artefact, "bad", repository)
        assert str(refused.value).startswith(str(artefact)) and message in str(refused.value)
        assert not (repository / "bad").exists()
    refused = tandem("add", str(tmp_path / "notes.txt"), "--name", "bad", "--repository", str(repository), cwd=tmp_path)
    assert refused.returncode == 2 and "not a model tandem knows" in refused.stderr


def test_a_bad_name_or_an_existing_version_is_refused(tmp_path: Path):
    relu = onnx_file(tmp_path / "relu.onnx")
    with pytest.raises(Exception, match="not a valid name"):
        add(relu, "../escape", tmp_path / "repo")
    add(relu, "relu", tmp_path / "repo")
    with pytest.raises(AddError, match="exists already"):
        add(relu, "relu", tmp_path / "repo")


def test_check_lists_every_problem(tmp_path: Path):
    repository = tmp_path / "repo"
    add(onnx_file(tmp_path / "relu.onnx"), "relu", repository)
    add(onnx_file(tmp_path / "wide.onnx"), "wide", repository)
    card_file = repository / "wide" / "1" / "model.yaml"
    card = yaml.safe_load(card_file.read_text())
    card["inputs"][0]["shape"] = [-1, 7]
    card_file.write_text(yaml.safe_dump(card))
    add(onnx_file(tmp_path / "typo.onnx"), "typo", repository)
    card_file = repository / "typo" / "1" / "model.yaml"
    card_file.write_text(card_file.read_text().replace("outputs:", "outptus:"))
    (repository / "empty" / "1").mkdir(parents=True)
    checked = tandem("check", str(repository), cwd=tmp_path)
    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    assert any(line.startswith("ok ") and "relu/1" in line for line in lines)
    assert any("wide/1" in line and "input 'x' is FP32 [-1, 7]" in line for line in lines)
    assert any("typo/1/model.yaml" in line and "outptus: unknown field" in line for line in lines)
    assert any("empty/1: no model.yaml" in line for line in lines)
    assert lines[-1] == "4 model versions, 3 with problems"
