"""diabetes-trees: the diabetes target again, from a gradient-boosted tree ensemble.

A second regressor on the same features and split as `diabetes` (ridge): alone it scores a little lower (see its
card), but its errors differ from ridge's, which is what the reference `ensemble` pipeline averages over.
"""

from pathlib import Path

from sklearn.ensemble import GradientBoostingRegressor
from sklearn.metrics import mean_absolute_error, r2_score

from recipes import diabetes
from recipes._onnx import write_sklearn_onnx

NAME = "diabetes-trees"
VERSION = "1"
SERVICE = "regression"


def train(seed: int) -> GradientBoostingRegressor:
    x_train, _, y_train, _ = diabetes.split(seed)
    trees = GradientBoostingRegressor(
        n_estimators=150, max_depth=2, learning_rate=0.05, subsample=0.8, random_state=seed
    )
    return trees.fit(x_train, y_train)


def build(seed: int, folder: Path) -> dict:
    _, x_test, _, y_test = diabetes.split(seed)
    model = train(seed)
    write_sklearn_onnx(model, NAME, len(diabetes.FEATURES), folder)
    predicted = model.predict(x_test)
    both = (predicted + diabetes.train(seed).predict(x_test)) / 2
    return {
        "description": "Diabetes progression one year after baseline, gradient-boosted trees (the ensemble's second).",
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [-1, len(diabetes.FEATURES)], "features": diabetes.FEATURES}
        ],
        "outputs": [{"name": "variable", "datatype": "FP32", "shape": [-1, 1]}],
        "preprocessing": "features are mean-centred and scaled as in sklearn.datasets.load_diabetes",
        "metrics": {
            "test_rows": len(y_test),
            "r2": round(float(r2_score(y_test, predicted)), 4),
            "mae": round(float(mean_absolute_error(y_test, predicted)), 3),
            "r2_of_the_mean_with_ridge": round(float(r2_score(y_test, both)), 4),
        },
        "data": {"source": "sklearn.datasets.load_diabetes", "split": "as the diabetes model's"},
    }
