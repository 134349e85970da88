"""reduction: principal components of the fleet's window features, for plots, monitoring and smaller downstream models.

The same 45 window features as the maintenance models, standardised in the pipeline (so the served model takes raw
features; unscaled, the sensors with the largest units would be the components) and projected on the first COMPONENTS
principal axes. The first axis is the wear trend shared by the degrading sensors and tracks remaining useful life
closely; the next ones follow the throttle's movement within the window. The rest of the variance is mostly
per-reading noise, which is why a few components explain well under half of it.
"""

from pathlib import Path

import numpy as np
from skl2onnx.common.data_types import FloatTensorType
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from recipes._onnx import write_sklearn_onnx
from recipes.maintenance_rul import INPUTS, PREPROCESSING, RUL_CAP, data_card, split
from tandem import fleet

NAME = "reduction"
VERSION = "1"
SERVICE = "regression"
PACKAGES = ["tandem", "threadpoolctl"]
COMPONENTS = 3


def train(seed: int) -> Pipeline:
    training, _ = split(seed)
    model = Pipeline([("scale", StandardScaler()), ("pca", PCA(n_components=COMPONENTS, svd_solver="full"))])
    # One thread: a multi-threaded BLAS may round the decomposition differently on another machine.
    with threadpool_limits(limits=1):
        return model.fit(training.features)


def build(seed: int, folder: Path) -> dict:
    """Writes model.onnx into `folder`; returns the card fields this recipe knows (build.py adds provenance)."""
    training, test = split(seed)
    model = train(seed)
    write_sklearn_onnx(
        model, NAME, len(fleet.FEATURES), folder, final_types=[("projection", FloatTensorType([None, COMPONENTS]))]
    )
    ratios = model.named_steps["pca"].explained_variance_ratio_
    first_component = model.transform(test.features)[:, 0]
    rul_correlation = np.corrcoef(first_component, np.minimum(test.rul, RUL_CAP))[0, 1]  # capped, as maintenance-rul
    return {
        "description": f"The first {COMPONENTS} principal components of a machine's window features "
        f"(its last {fleet.WINDOW} readings).",
        "inputs": INPUTS,
        "outputs": [{"name": "projection", "datatype": "FP32", "shape": [-1, COMPONENTS]}],
        "preprocessing": f"{PREPROCESSING}; the model standardises the features itself (training mean and "
        "standard deviation) before projecting",
        "parameters": {"window": fleet.WINDOW},
        "metrics": {
            "components": COMPONENTS,
            "explained_variance_ratio": [round(float(ratio), 4) for ratio in ratios],
            "explained_variance_total": round(float(ratios.sum()), 4),
            # On held-out machines: how closely the first component follows capped remaining useful life.
            "first_component_rul_correlation": round(float(rul_correlation), 4),
        },
        "data": data_card(seed, training, test),
    }
