"""maintenance-rul: remaining useful life (cycles until failure) of a machine, from the features of its last readings.

Trained on the seeded synthetic run-to-failure fleet of tandem.fleet and measured on machines it never saw: the split
is by machine, never by row, since the windows of one machine overlap and would leak into the test set. The target is
piecewise linear, capped at RUL_CAP cycles as is usual for C-MAPSS: early in a life the sensors show no wear yet, so
"at least RUL_CAP cycles" is all anyone can tell.

Gradient boosting is the served model. Ridge regression on the same split comes close overall (held-out r2 0.877
against 0.887 at seed 0), since capped RUL is nearly linear in the mean levels of the wearing sensors, but boosting
follows the steepening of exponential wear near the end, where a prediction matters most (RMSE 11.1 against 13.9
cycles on windows with at most 50 cycles left).
"""

from pathlib import Path

import numpy as np
from skl2onnx.common.data_types import FloatTensorType
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from recipes._onnx import write_sklearn_onnx
from tandem import fleet

NAME = "maintenance-rul"
VERSION = "1"
SERVICE = "regression"
PACKAGES = ["tandem"]
RUL_CAP = 125
TRAIN_MACHINES, TEST_MACHINES = 160, 40
# Consecutive windows share all but one reading: every 5th carries nearly the same information in a fifth of the time.
TRAIN_EVERY = 5
# maintenance-failure, clusters and reduction import these: the same input, preprocessing, split and data card.
INPUTS = [{"name": "input", "datatype": "FP32", "shape": [-1, len(fleet.FEATURES)], "features": list(fleet.FEATURES)}]
PREPROCESSING = (
    f"tandem.fleet.window_features of one machine's last {fleet.WINDOW} readings (last value, mean and least-squares "
    "slope per cycle of every channel); no prediction before the window is full"
)


def split(seed: int) -> tuple[fleet.Table, fleet.Table]:
    """Windows of the training machines (every TRAIN_EVERY-th) and of the held-out machines (all of them)."""
    train = fleet.table(fleet.make_fleet(seed, TRAIN_MACHINES), every=TRAIN_EVERY)
    test = fleet.table(fleet.make_fleet(seed, TEST_MACHINES, first=TRAIN_MACHINES))
    return train, test


def data_card(seed: int, training: fleet.Table, test: fleet.Table) -> dict:
    return {
        "source": "tandem.fleet: seeded synthetic run-to-failure fleet (C-MAPSS-like)",
        "fleet_seed": seed,
        "train_machines": TRAIN_MACHINES,
        "test_machines": TEST_MACHINES,
        "train_rows": len(training.rul),
        "test_rows": len(test.rul),
        "sha256": fleet.digest(training, test),
    }


def target(rul: np.ndarray) -> np.ndarray:
    """What the model learns and is measured on: RUL capped at RUL_CAP cycles."""
    return np.minimum(rul, RUL_CAP).astype(np.float64)


def train(seed: int) -> GradientBoostingRegressor:
    training, _ = split(seed)
    model = GradientBoostingRegressor(
        n_estimators=150, max_depth=4, learning_rate=0.05, subsample=0.8, max_features=0.3, random_state=seed
    )
    return model.fit(training.features, target(training.rul))


def regression_metrics(truth: np.ndarray, predicted: np.ndarray) -> dict:
    return {
        "rmse": round(float(np.sqrt(mean_squared_error(truth, predicted))), 3),
        "mae": round(float(mean_absolute_error(truth, predicted)), 3),
    }


def build(seed: int, folder: Path) -> dict:
    """Writes model.onnx into `folder`; returns the card fields this recipe knows (build.py adds provenance)."""
    training, test = split(seed)
    model = train(seed)
    write_sklearn_onnx(model, NAME, len(fleet.FEATURES), folder, final_types=[("rul", FloatTensorType([None, 1]))])
    truth = target(test.rul)
    predicted = model.predict(test.features)
    baseline = np.full_like(truth, target(training.rul).mean())  # the naive model: the training mean, always
    return {
        "description": f"Remaining useful life of a machine (cycles until failure, capped at {RUL_CAP}) "
        f"from its last {fleet.WINDOW} readings.",
        "inputs": INPUTS,
        "outputs": [{"name": "rul", "datatype": "FP32", "shape": [-1, 1]}],
        "preprocessing": PREPROCESSING,
        "parameters": {"window": fleet.WINDOW, "rul_cap": RUL_CAP},
        "metrics": {
            "test_rows": len(truth),
            **regression_metrics(truth, predicted),
            "r2": round(float(r2_score(truth, predicted)), 4),
            "baseline": {"predicts": "training mean", **regression_metrics(truth, baseline)},
        },
        "data": data_card(seed, training, test),
    }
