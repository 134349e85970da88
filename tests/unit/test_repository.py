"""Versions side by side, load/unload/reload through the OIP repository extension, batching on a real model."""

import asyncio
import shutil

import httpx
import numpy as np
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

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
    app = make_app(
        "regression", RegressionSettings(model_repository=repository, models=["diabetes"], gateway_app="", **settings)
    )
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


def scaling_graph(factor: float) -> bytes:
    """An ONNX graph y = x * factor, x FP32 [rows, 1]: versions that answer differently."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    factor_value = numpy_helper.from_array(np.array(factor, np.float32), "factor")
    graph = helper.make_graph([helper.make_node("Mul", ["x", "factor"], ["y"])], "scale", [x], [y], [factor_value])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model.SerializeToString()


def write_scaling_model(root, name: str, version: str, factor: float) -> None:
    folder = root / name / version
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(scaling_graph(factor))
    tensor = {"datatype": "FP32", "shape": [-1, 1]}
    card = {"name": name, "version": version, "inputs": [{"name": "x", **tensor}], "outputs": [{"name": "y", **tensor}]}
    (folder / "model.yaml").write_text(yaml.safe_dump(card))


def scale_request(value: float) -> dict:
    return {"inputs": [{"name": "x", "shape": [1, 1], "datatype": "FP32", "data": [value]}]}


async def with_server(root, scenario):
    """`tandem serve root`: every model of the repository, whatever service its card names."""
    app = make_app("my-models", RegressionSettings(model_repository=root, gateway_app=""), every_model=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://my-models") as client:
            return await scenario(client)


def test_a_request_in_flight_finishes_on_the_version_it_started_with(tmp_path):
    # Version 1 doubles, version 2 triples: each answer must be the one of the version it names, while version 2
    # appears and is loaded under load, and once loaded it is the default.
    write_scaling_model(tmp_path, "scale", "1", 2.0)
    factors = {"1": 2.0, "2": 3.0}

    async def scenario(client):
        async def infer_many(offset: int) -> list[tuple[str, float, float]]:
            answers = []
            for n in range(30):
                value = float(offset * 100 + n)
                answer = await client.post("/v2/models/scale/infer", json=scale_request(value))
                assert answer.status_code == 200, answer.text
                body = answer.json()
                answers.append((body["model_version"], value, body["outputs"][0]["data"][0]))
            return answers

        async def add_version_2() -> None:
            await asyncio.sleep(0.01)
            write_scaling_model(tmp_path, "scale", "2", 3.0)
            assert (await client.post("/v2/repository/models/scale/load")).status_code == 200

        results = await asyncio.gather(*(infer_many(offset) for offset in range(4)), add_version_2())
        answers = [answer for batch in results[:4] for answer in batch]
        for version, value, output in answers:
            assert output == value * factors[version], (version, value, output)
        after = (await client.post("/v2/models/scale/infer", json=scale_request(1.0))).json()
        assert after["model_version"] == "2" and after["outputs"][0]["data"] == [3.0]
        assert (await client.get("/v2/models/scale")).json()["versions"] == ["1", "2"]
        return {version for version, _, _ in answers}

    versions_seen = asyncio.run(with_server(tmp_path, scenario))
    assert "1" in versions_seen


def test_a_model_that_fails_to_load_is_unavailable_with_its_reason_and_the_others_serve(tmp_path):
    # Bad inputs tried: a card with an unknown field and a wrong type; a card whose artefact is missing; an artefact
    # that is not an ONNX graph; a card whose shape contradicts the graph; YAML that does not parse.
    write_scaling_model(tmp_path, "good", "1", 2.0)
    write_scaling_model(tmp_path, "typo", "1", 2.0)
    card_file = tmp_path / "typo" / "1" / "model.yaml"
    card = yaml.safe_load(card_file.read_text())
    card_file.write_text(
        yaml.safe_dump({**card, "inptus": [], "outputs": [{"name": "y", "datatype": "FP33", "shape": [-1, 1]}]})
    )
    write_scaling_model(tmp_path, "missing", "1", 2.0)
    (tmp_path / "missing" / "1" / "model.onnx").unlink()
    write_scaling_model(tmp_path, "garbage", "1", 2.0)
    (tmp_path / "garbage" / "1" / "model.onnx").write_bytes(b"not a graph")
    write_scaling_model(tmp_path, "contradicts", "1", 2.0)
    card_file = tmp_path / "contradicts" / "1" / "model.yaml"
    card = yaml.safe_load(card_file.read_text())
    card["inputs"][0]["shape"] = [-1, 3]
    card_file.write_text(yaml.safe_dump(card))
    (tmp_path / "unparsable" / "1").mkdir(parents=True)
    (tmp_path / "unparsable" / "1" / "model.yaml").write_text("name: [unclosed")
    reasons = {
        "typo": ["typo/1/model.yaml", "inptus: unknown field", "outputs.0.datatype", "FP33"],
        "missing": ["missing/1", "model.onnx"],
        "garbage": ["garbage/1"],
        "contradicts": ["contradicts/1", "input 'x' is FP32 [-1, 3]", "ONNX graph says FP32 [-1, 1]"],
        "unparsable": ["unparsable/1/model.yaml", "not valid YAML"],
    }

    async def scenario(client):
        index = {entry["name"]: entry for entry in (await client.post("/v2/repository/index")).json()}
        assert index["good"]["state"] == "READY"
        assert (await client.post("/v2/models/good/infer", json=scale_request(2.0))).json()["outputs"][0]["data"] == [
            4.0
        ]
        assert (await client.get("/v2/health/ready")).status_code == 200
        for name, fragments in reasons.items():
            assert index[name]["state"] == "UNAVAILABLE"
            for fragment in fragments:
                assert fragment in index[name]["reason"], (name, index[name]["reason"])
            for answer in (
                await client.get(f"/v2/models/{name}"),
                await client.get(f"/v2/models/{name}/ready"),
                await client.post(f"/v2/models/{name}/infer", json=scale_request(1.0)),
            ):
                assert answer.status_code == 503, (name, answer.text)
                assert "UNAVAILABLE" in answer.json()["error"] and fragments[0] in answer.json()["error"]
        # Mending the card and loading again serves it, without a restart.
        write_scaling_model(tmp_path, "fixed", "1", 5.0)
        shutil.rmtree(tmp_path / "typo")
        shutil.move(tmp_path / "fixed", tmp_path / "typo")
        card_file = tmp_path / "typo" / "1" / "model.yaml"
        card_file.write_text(card_file.read_text().replace("name: fixed", "name: typo"))
        assert (await client.post("/v2/repository/models/typo/load")).status_code == 200
        assert (await client.post("/v2/models/typo/infer", json=scale_request(1.0))).json()["outputs"][0]["data"] == [
            5.0
        ]
        metrics = (await client.get("/metrics")).text
        assert 'tandem_inference_requests_total{model="missing",outcome="unavailable",version=""}' in metrics

    asyncio.run(with_server(tmp_path, scenario))


def test_a_server_with_no_model_loaded_is_not_ready(tmp_path):
    write_scaling_model(tmp_path, "only", "1", 2.0)

    async def scenario(client):
        assert (await client.get("/v2/health/ready")).status_code == 200
        assert (await client.post("/v2/repository/models/only/unload")).status_code == 200
        not_ready = await client.get("/v2/health/ready")
        assert not_ready.status_code == 503 and "no model is loaded" in not_ready.json()["error"]
        assert (await client.get("/v2/health/live")).status_code == 200
        assert (await client.post("/v2/repository/models/only/load")).status_code == 200
        assert (await client.get("/v2/health/ready")).status_code == 200

    asyncio.run(with_server(tmp_path, scenario))
