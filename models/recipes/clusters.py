"""clusters: k-means groups of machine states, from the same window features as the maintenance models.

Clustered on the fleet's window features rather than on the diabetes data: the features service can send the vector
it already sends to maintenance-rul and maintenance-failure, and the groups mean something for a fleet (machines
near failure, and healthy machines split by how their throttle and sensors moved within the window), whereas the 442
diabetes patients form no clear groups. The features are standardised first (in the pipeline, so the served model
takes raw features): unscaled, the sensors with the largest units would decide every cluster on their own.

Cluster ids are renumbered by the mean remaining useful life of their training windows, most life left first, so
they do not depend on the order in which k-means happened to find them. Scores are Euclidean distances to each
cluster centre in standardised units. Silhouette is modest: most of the 45 features are noise around a wear trend.
"""

from pathlib import Path

import numpy as np
from skl2onnx.common.data_types import FloatTensorType, Int64TensorType
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from recipes._onnx import write_sklearn_onnx
from recipes.maintenance_rul import INPUTS, PREPROCESSING, data_card, split
from tandem import fleet

NAME = "clusters"
VERSION = "1"
SERVICE = "regression"
PACKAGES = ["tandem", "threadpoolctl"]
CLUSTERS = 3
N_INIT = 10  # k-means runs from this many seeded starts and keeps the best
NEAR_FAILURE = 30  # cycles: the summary reports each cluster's share of windows this close to failure
SILHOUETTE_SAMPLE = 2000  # held-out rows: silhouette costs rows squared


def renumber_by_rul(kmeans: KMeans, rul: np.ndarray) -> None:
    """Reorders the fitted clusters in place: id 0 has the highest mean RUL among its training rows."""
    mean_rul = [rul[kmeans.labels_ == cluster].mean() for cluster in range(CLUSTERS)]
    order = np.argsort(mean_rul, kind="stable")[::-1]
    kmeans.cluster_centers_ = kmeans.cluster_centers_[order]
    kmeans.labels_ = np.argsort(order)[kmeans.labels_]  # old id -> its position in the new order


def train(seed: int) -> Pipeline:
    training, _ = split(seed)
    model = Pipeline(
        [("scale", StandardScaler()), ("kmeans", KMeans(n_clusters=CLUSTERS, n_init=N_INIT, random_state=seed))]
    )
    # One thread: k-means adds up per-thread partial sums in whatever order the threads finish, which would let
    # the last bits of the centres (and so model.onnx) depend on the machine and the moment.
    with threadpool_limits(limits=1):
        model.fit(training.features)
    renumber_by_rul(model.named_steps["kmeans"], training.rul)
    return model


def cluster_summary(labels: np.ndarray, rul: np.ndarray) -> list[dict]:
    """Per cluster: its share of the rows, their mean RUL and the share of them within NEAR_FAILURE cycles of failure."""
    summary = []
    for cluster in range(CLUSTERS):
        members = rul[labels == cluster]
        summary.append(
            {
                "cluster": cluster,
                "share": round(float(len(members) / len(rul)), 4),
                "mean_rul": round(float(members.mean()), 1) if len(members) else None,
                "near_failure": round(float(np.mean(members <= NEAR_FAILURE)), 4) if len(members) else None,
            }
        )
    return summary


def build(seed: int, folder: Path) -> dict:
    """Writes model.onnx into `folder`; returns the card fields this recipe knows (build.py adds provenance)."""
    training, test = split(seed)
    model = train(seed)
    write_sklearn_onnx(
        model,
        NAME,
        len(fleet.FEATURES),
        folder,
        final_types=[("cluster", Int64TensorType([None])), ("distances", FloatTensorType([None, CLUSTERS]))],
    )
    labels = model.predict(test.features)
    scaled = model.named_steps["scale"].transform(test.features)
    silhouette = silhouette_score(scaled, labels, sample_size=SILHOUETTE_SAMPLE, random_state=seed)
    return {
        "description": f"Which of {CLUSTERS} machine-state clusters a machine's last {fleet.WINDOW} readings fall in "
        "(0: most life left), with the distance to every cluster centre.",
        "inputs": INPUTS,
        "outputs": [
            {"name": "cluster", "datatype": "INT64", "shape": [-1]},
            {"name": "distances", "datatype": "FP32", "shape": [-1, CLUSTERS]},
        ],
        "preprocessing": f"{PREPROCESSING}; the model standardises the features itself (training mean and "
        "standard deviation), and distances are in those standardised units",
        "parameters": {"window": fleet.WINDOW},
        "metrics": {
            "clusters": CLUSTERS,
            "n_init": N_INIT,
            "inertia": round(float(model.named_steps["kmeans"].inertia_), 1),  # training rows, standardised units
            "silhouette": round(float(silhouette), 4),  # a held-out sample of SILHOUETTE_SAMPLE rows
            "silhouette_sample": SILHOUETTE_SAMPLE,
            "near_failure_cycles": NEAR_FAILURE,
            "held_out": cluster_summary(labels, test.rul),
        },
        "data": data_card(seed, training, test),
    }
