"""Versions side by side, load/unload/reload through the OIP repository extension, batching on a real model."""

import asyncio
import shutil

import httpx
import numpy as np
import pytest
import yaml

from regression.main import RegressionSettings
from tandem.server import make_app

ROW = [0.038, 0.051, 0.062, 0.022, -0.044, -0.035, -0.043, -0.003, 0.020, -0.018]
INFER = {"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": ROW}]}


@pytest.fixture
def repository(tmp_path, model_repository):
    """diabetes as versions 1 and 2, and a model of another service."""
    for version in ("1", "2"):
        shutil.copytree(model_repository / "diabetes" / "1", tmp_path / "diabetes" / version)
        card_file = tmp_path / "diabetes" / version / "model.yaml"
        card_file.write_text(yaml.safe_dump({**yaml.safe_load(card_file.read_text()), "version": version}))
    shutil.copytree(model_repository / "diabetes" / "1", tmp_path / "foreign" / "1")
    card_file = tmp_path / "foreign" / "1" / "model.yaml"
    card_file.write_text(yaml.safe_dump({**yaml.safe_load(card_file.read_text()), "service": "vision"}))
    return tmp_path


async def with_app(repository, scenario, **settings):
    app = make_app("regression", RegressionSettings(model_repository=repository, models=["diabetes"], **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://regression") as client:
            return await scenario(client)


def test_versions_live_side_by_side_and_the_highest_is_the_default(repository):
    async def scenario(client):
        assert (await client.get("/v2/models/diabetes")).json()["versions"] == ["1", "2"]
        default = (await client.post("/v2/models/diabetes/infer", json=INFER)).json()
        first = (await client.post("/v2/models/diabetes/versions/1/infer", json=INFER)).json()
        assert (default["model_version"], first["model_version"]) == ("2", "1")

    asyncio.run(with_app(repository, scenario))


def test_unload_and_load_without_restarting(repository):
    async def scenario(client):
        index = (await client.post("/v2/repository/index")).json()
        assert {(entry["name"], entry["state"]) for entry in index} == {("diabetes", "READY")}

        assert (await client.post("/v2/repository/models/diabetes/unload")).status_code == 200
        assert (await client.post("/v2/models/diabetes/infer", json=INFER)).status_code == 404
        assert (await client.get("/v2/models/diabetes/ready")).status_code == 404
        index = (await client.post("/v2/repository/index")).json()
        assert {entry["state"] for entry in index} == {"UNAVAILABLE"}
        assert (await client.post("/v2/repository/index", json={"ready": True})).json() == []

        assert (await client.post("/v2/repository/models/diabetes/load")).status_code == 200
        assert (await client.post("/v2/models/diabetes/infer", json=INFER)).status_code == 200

        refused = await client.post("/v2/repository/models/foreign/load")
        assert refused.status_code == 404
        assert "belongs to another service" in refused.json()["error"]
        assert (await client.post("/v2/repository/models/nope/load")).status_code == 404
        assert (await client.post("/v2/repository/models/nope/unload")).status_code == 404
        assert (await client.post("/v2/repository/models/..x/load")).status_code == 400
        assert (await client.post("/v2/repository/index", content=b"{")).status_code == 400

    asyncio.run(with_app(repository, scenario))


def test_reloading_never_fails_a_request_in_flight(repository):
    async def scenario(client):
        async def infer_many():
            return [(await client.post("/v2/models/diabetes/infer", json=INFER)).status_code for _ in range(40)]

        async def reload_many():
            return [(await client.post("/v2/repository/models/diabetes/load")).status_code for _ in range(5)]

        statuses, reloads = await asyncio.gather(asyncio.gather(*(infer_many() for _ in range(4))), reload_many())
        assert {status for batch in statuses for status in batch} == {200}
        assert set(reloads) == {200}

    asyncio.run(with_app(repository, scenario))


def test_batching_a_real_model_gives_the_same_answers(repository):
    rows = np.random.default_rng(0).normal(0, 0.05, (24, 10)).astype(np.float32)

    async def answers(client):
        responses = await asyncio.gather(
            *(
                client.post(
                    "/v2/models/diabetes/infer",
                    json={"inputs": [{"name": "input", "shape": [1, 10], "datatype": "FP32", "data": row.tolist()}]},
                )
                for row in rows
            )
        )
        metrics = (await client.get("/metrics")).text
        return [response.json()["outputs"][0]["data"] for response in responses], metrics

    unbatched, _ = asyncio.run(with_app(repository, answers))
    batched, metrics = asyncio.run(
        with_app(repository, answers, batching={"diabetes": {"max_batch_size": 8, "max_wait_ms": 20}})
    )
    np.testing.assert_allclose(batched, unbatched, rtol=1e-6)
    count = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('tandem_batch_size_count{model="diabetes",version="2"}')
    )
    assert 3 <= count < 24  # 24 rows ran in fewer, fuller batches
