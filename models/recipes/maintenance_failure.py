"""maintenance-failure: will a machine fail within the next HORIZON cycles? From the features of its last readings.

The same fleet, features and split by machine as maintenance-rul, with a yes/no target a maintenance planner acts on
directly: "failing" when the machine has at most HORIZON cycles left. Gradient-boosted trees give probabilities that
rank windows well (ROC AUC) and a 0.5 threshold that trades precision against recall near the boundary; the card
records both, with the base rate that says how rare "failing" is.
"""

from pathlib import Path

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import accuracy_score, average_precision_score, precision_score, recall_score, roc_auc_score

from recipes._onnx import write_sklearn_onnx
from recipes.maintenance_rul import INPUTS, PREPROCESSING, data_card, split
from tandem import fleet

NAME = "maintenance-failure"
VERSION = "1"
SERVICE = "regression"
PACKAGES = ["tandem"]
HORIZON = 30  # cycles: "failing" means the machine fails within this many cycles (RUL <= HORIZON)
LABELS = ["ok", "failing"]


def target(rul: np.ndarray) -> np.ndarray:
    """1 ("failing") when at most HORIZON cycles are left, else 0 ("ok"): indices into LABELS."""
    return (rul <= HORIZON).astype(np.int64)


def train(seed: int) -> GradientBoostingClassifier:
    training, _ = split(seed)
    model = GradientBoostingClassifier(
        n_estimators=150, max_depth=4, learning_rate=0.05, subsample=0.8, max_features=0.3, random_state=seed
    )
    return model.fit(training.features, target(training.rul))


def build(seed: int, folder: Path) -> dict:
    """Writes model.onnx into `folder`; returns the card fields this recipe knows (build.py adds provenance)."""
    training, test = split(seed)
    model = train(seed)
    write_sklearn_onnx(
        model,
        NAME,
        len(fleet.FEATURES),
        folder,
        options={id(model): {"zipmap": False}},  # probabilities as a plain [rows, 2] tensor, not a list of maps
    )
    truth = target(test.rul)
    failing = model.predict_proba(test.features)[:, 1]
    predicted = (failing > 0.5).astype(np.int64)
    return {
        "description": f"Probability that a machine fails within {HORIZON} cycles, from its last {fleet.WINDOW} readings.",
        "inputs": INPUTS,
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(LABELS)]},
        ],
        "labels": LABELS,
        "preprocessing": PREPROCESSING,
        "parameters": {"window": fleet.WINDOW, "horizon": HORIZON},
        "metrics": {
            "test_rows": len(truth),
            "roc_auc": round(float(roc_auc_score(truth, failing)), 4),
            "average_precision": round(float(average_precision_score(truth, failing)), 4),
            "threshold": 0.5,
            "precision": round(float(precision_score(truth, predicted)), 4),
            "recall": round(float(recall_score(truth, predicted)), 4),
            "accuracy": round(float(accuracy_score(truth, predicted)), 4),
            "base_rate": round(float(truth.mean()), 4),  # so "always ok" would score accuracy 1 - base_rate
        },
        "data": data_card(seed, training, test),
    }
