"""The pipelines service without sidecars: the Pipeline schema, compiling against model metadata (mapping errors
named by step and tensor), and the in-request executor over fake model calls (order, concurrency, conditions,
fan-out, onError, timeouts, retries)."""

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import expressions
from pipelines.executor import StepFailed, execute, response_parameters
from pipelines.graph import GraphError, build_graph
from pipelines.models import StepCallError
from pipelines.runs import Run, RunStore, StepRecord
from pipelines.spec import PipelineSpecError, json_schema, parse, read_folder

ROOT = Path(__file__).resolve().parents[2]
REGRESSOR = {
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 10]}],
    "outputs": [{"name": "variable", "datatype": "FP32", "shape": [-1, 1]}],
}
TEXT = {
    "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
    ],
}
OCR = {
    "inputs": [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
    "outputs": [
        {"name": "text", "datatype": "BYTES", "shape": [-1]},
        {"name": "lines", "datatype": "BYTES", "shape": [-1]},
    ],
}
MODELS = {("diabetes", None): REGRESSOR, ("trees", None): REGRESSOR, ("sentiment", None): TEXT, ("ocr", None): OCR}


def pipeline_yaml(steps: str, outputs: str, inputs: str = "[{name: input, datatype: FP32, shape: [-1, 10]}]") -> str:
    return f"""
apiVersion: tandem.dev/v1
kind: Pipeline
metadata: {{name: test}}
spec:
  inputs: {inputs}
  steps: {steps}
  outputs: {outputs}
"""


def graph_of(steps: str, outputs: str, **kwargs):
    return build_graph(parse(pipeline_yaml(steps, outputs, **kwargs), "test.yaml"), MODELS)


ENSEMBLE_STEPS = """
    - {name: ridge, model: diabetes, inputs: {input: $input.input}}
    - {name: trees, model: trees, inputs: {input: $input.input}}
"""


def test_the_committed_schema_is_the_one_the_types_give():
    committed = json.loads((ROOT / "pipelines" / "pipeline.schema.json").read_text())
    assert committed == json_schema()


def test_the_reference_pipelines_parse():
    pipelines, refused = read_folder(ROOT / "pipelines")
    assert refused == {}
    assert {"ensemble", "triage", "canary"} <= pipelines.keys()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda y: y.replace("kind: Pipeline", "kind: Pipe"), "kind"),
        (lambda y: y.replace("steps:", "stepz:"), "stepz"),
        (lambda y: y.replace("input: $input.input}}", "input: not a reference}}", 1), "not a tensor reference"),
        (lambda y: y.replace("name: trees", "name: ridge"), "unique"),
        (lambda y: y.replace("name: trees", "name: Trees!"), "steps.1.name"),
    ],
)
def test_schema_errors_name_the_file_and_the_place(change, message):
    """Tried: a wrong kind, a misspelt key, a mapping that is no reference, two steps of one name, a bad name."""
    text = change(pipeline_yaml(ENSEMBLE_STEPS, "{prediction: ridge.variable}"))
    with pytest.raises(PipelineSpecError, match=message) as error:
        parse(text, "bad.yaml")
    assert str(error.value).startswith("bad.yaml")


def test_a_timeout_reads_as_a_duration():
    graph = graph_of(
        "[{name: ridge, model: diabetes, inputs: {input: $input.input}, timeout: 250ms}]", "{p: ridge.variable}"
    )
    assert graph.steps["ridge"].spec.timeout == 0.25


@pytest.mark.parametrize(
    ("steps", "outputs", "message"),
    [
        (
            "[{name: a, model: diabetes, inputs: {input: $input.missing}}]",
            "{p: a.variable}",
            "step 'a' .* input 'input'.*no input 'missing'",
        ),
        (
            "[{name: a, model: diabetes, inputs: {inputs: $input.input}}]",
            "{p: a.variable}",
            r"step 'a'.*input\(s\) \['input'\] are not mapped",
        ),
        (
            "[{name: a, model: diabetes, inputs: {input: $input.input, extra: $input.input}}]",
            "{p: a.variable}",
            "step 'a'.*no input 'extra'",
        ),
        (
            ENSEMBLE_STEPS.replace("trees, inputs: {input: $input.input}", "trees, inputs: {input: ridge.variable}"),
            "{p: trees.variable}",
            r"step 'trees' \(model trees\) input 'input': 'ridge.variable' is FP32 \[-1, 1\] but the model takes FP32 \[-1, 10\]",
        ),
        ("[{name: a, model: diabetes, inputs: {input: b.variable}}]", "{p: a.variable}", "step 'a'.*names no step"),
        (
            ENSEMBLE_STEPS.replace(
                "ridge, model: diabetes, inputs: {input: $input.input}",
                "ridge, model: diabetes, inputs: {input: trees.variable}",
            ).replace("trees, inputs: {input: $input.input}", "trees, inputs: {input: ridge.variable}"),
            "{p: trees.variable}",
            "cycle",
        ),
        (
            "[{name: a, model: diabetes, inputs: {input: $input.input}}]",
            "{p: a.nothing}",
            "output 'p'.*step 'a' \\(model diabetes\\) has no output 'nothing'",
        ),
        (
            "[{name: a, model: diabetes, inputs: {input: $item}}]",
            "{p: a.variable}",
            "step 'a'.*'\\$item' is only defined",
        ),
        (
            "[{name: a, model: diabetes, inputs: {input: $input.input}, when: 'a.variable > 0'}]",
            "{p: a.variable}",
            "its own output",
        ),
        (
            ENSEMBLE_STEPS.replace(
                "trees, inputs: {input: $input.input}",
                "trees, inputs: {input: $input.input}, when: 'ridge.variable > 0'",
            ),
            "{p: trees.variable}",
            "step 'trees'.*gives 2 values.*any",
        ),
        (
            "[{name: a, model: diabetes, inputs: {input: $input.input}, onError: {default: {variable: [[0, 1]]}}}]",
            "{p: a.variable}",
            "step 'a'.*default 'variable' has shape \\[1, 2\\]",
        ),
        (
            "[{name: a, model: diabetes, inputs: {input: $input.input}, onError: {default: {other: 1}}}]",
            "{p: a.variable}",
            "default names outputs \\['other'\\]",
        ),
        (
            "[{name: a, model: sentiment, inputs: {text: $item}, forEach: {over: $input.input, json: text}}]",
            "{p: a.label}",
            "json needs BYTES",
        ),
        (
            "[{name: a, model: diabetes, inputs: {input: $input.input}}]",
            "{p: 'a.variable + unknown(1)'}",
            "output 'p'.*unknown function",
        ),
    ],
)
def test_mappings_that_cannot_work_are_refused_naming_step_and_tensor(steps, outputs, message):
    """Tried: an unknown pipeline input, an unmapped and an unknown model input, a wrong shape, an unknown step, a
    cycle, an unknown output, $item outside forEach, a step's condition on itself, a condition of many values, a
    default of the wrong shape or for an unknown output, json over numbers, an unknown function."""
    with pytest.raises(GraphError, match=message):
        graph_of(steps, outputs)


def test_output_expressions_get_their_type_from_their_inputs():
    graph = graph_of(ENSEMBLE_STEPS, "{mean: 'mean(ridge.variable, trees.variable)', big: 'ridge.variable > 100'}")
    assert graph.metadata()["outputs"] == [
        {"name": "mean", "datatype": "FP32", "shape": [-1, 1]},
        {"name": "big", "datatype": "BOOL", "shape": [-1, 1]},
    ]


class FakeModels:
    """Stands in for the sidecar: records calls, can be slow or fail per model."""

    def __init__(self, delays: dict[str, float] | None = None, failures: dict[str, list[StepCallError]] | None = None):
        self.delays = delays or {}
        self.failures = failures or {}
        self.calls: list[tuple[str, float]] = []
        self.running = 0
        self.most_at_once = 0

    async def __call__(self, model, version, inputs, timeout):
        self.calls.append((model, asyncio.get_running_loop().time()))
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            await asyncio.sleep(self.delays.get(model, 0.0))
            if self.failures.get(model):
                raise self.failures[model].pop(0)
            if model == "diabetes":
                return {"variable": inputs["input"][:, :1] * 2}
            if model == "trees":
                return {"variable": inputs["input"].sum(axis=1, keepdims=True)}
            if model == "sentiment":
                texts = [str(text) for text in inputs["text"]]
                labels = np.array(["negative" if "bad" in text else "positive" for text in texts], dtype=object)
                return {
                    "label": labels,
                    "probabilities": np.array([[0.9, 0.1] if "bad" in t else [0.1, 0.9] for t in texts], np.float32),
                }
            if model == "ocr":
                lines = [{"text": line} for line in str(inputs["image"][0]).split("|")]
                return {
                    "text": np.array(["\n".join(line["text"] for line in lines)], dtype=object),
                    "lines": np.array([json.dumps(lines)], dtype=object),
                }
            raise AssertionError(model)
        finally:
            self.running -= 1


def run_graph(graph, inputs, models):
    run = Run(graph.name, "1", {name: StepRecord(step.spec.model) for name, step in graph.steps.items()})
    try:
        outputs = asyncio.run(execute(graph, inputs, models, run))
    except StepFailed as error:
        return run, error
    return run, outputs


ROWS = np.arange(20, dtype=np.float32).reshape(2, 10)


def test_independent_steps_run_at_once_and_outputs_combine():
    models = FakeModels(delays={"diabetes": 0.05, "trees": 0.05})
    graph = graph_of(ENSEMBLE_STEPS, "{mean: 'mean(ridge.variable, trees.variable)'}")
    run, outputs = run_graph(graph, {"input": ROWS}, models)
    assert models.most_at_once == 2
    expected = (ROWS[:, :1] * 2 + ROWS.sum(axis=1, keepdims=True)) / 2
    np.testing.assert_allclose(outputs["mean"], expected)
    assert response_parameters(run)["steps_ran"] == "ridge,trees"


def test_a_step_waits_for_the_steps_it_needs():
    graph = graph_of(
        ENSEMBLE_STEPS
        + "    - {name: after, model: trees, inputs: {input: $input.input}, when: 'all(ridge.variable >= 0)'}",
        "{p: after.variable}",
    )
    models = FakeModels(delays={"diabetes": 0.05})
    run_graph(graph, {"input": ROWS}, models)
    order = [model for model, _ in sorted(models.calls, key=lambda call: call[1])]
    assert order[0] in ("diabetes", "trees") and order[-1] == "trees" and len(order) == 3
    assert models.calls[-1][1] - models.calls[0][1] >= 0.05


TRIAGE_STEPS = """
    - {name: ocr, model: ocr, inputs: {image: $input.image}}
    - {name: sentiment, model: sentiment, forEach: {over: ocr.lines, json: text}, inputs: {text: $item}}
    - {name: complaint, model: sentiment, when: "any(sentiment.label == 'negative')", inputs: {text: ocr.text}}
"""
TRIAGE_OUTPUTS = "{labels: sentiment.label, p: sentiment.probabilities, complaint: complaint.label}"
IMAGE_INPUT = "[{name: image, datatype: BYTES, shape: [1]}]"


def image(text: str) -> np.ndarray:
    return np.array([text], dtype=object)


def test_fan_out_gathers_in_order_and_a_false_condition_skips():
    graph = graph_of(TRIAGE_STEPS, TRIAGE_OUTPUTS, inputs=IMAGE_INPUT)
    models = FakeModels()
    run, outputs = run_graph(graph, {"image": image("good one|fine two|nice three")}, models)
    assert outputs["labels"].tolist() == ["positive"] * 3
    assert outputs["p"].shape == (3, 2)
    assert "complaint" not in outputs
    assert run.steps["complaint"].status == "skipped" and "is false" in run.steps["complaint"].reason
    assert [model for model, _ in models.calls].count("sentiment") == 3

    run, outputs = run_graph(graph, {"image": image("good|bad|fine")}, FakeModels())
    assert outputs["labels"].tolist() == ["positive", "negative", "positive"]
    assert outputs["complaint"].tolist() == ["negative"]
    assert response_parameters(run)["steps_skipped"] == ""


def test_fan_out_over_nothing_gives_empty_outputs_of_the_right_type():
    graph = graph_of(
        "[{name: each, model: diabetes, forEach: {over: $input.input}, inputs: {input: $item}}]", "{p: each.variable}"
    )
    run, outputs = run_graph(graph, {"input": np.zeros((0, 10), np.float32)}, FakeModels())
    assert outputs["p"].shape == (0, 1) and outputs["p"].dtype == np.float32


def unavailable() -> StepCallError:
    return StepCallError("regression answered 503", 503, retryable=True)


def test_a_failing_step_fails_the_run_unless_on_error_says_otherwise():
    """Each onError: fail (the run fails with the step named), skip (dependants skipped, the rest runs), default."""
    base = ENSEMBLE_STEPS.replace(
        "trees, inputs: {input: $input.input}", "trees, inputs: {input: $input.input}{on_error}"
    )
    outputs = "{mean: 'mean(ridge.variable, trees.variable)', ridge: ridge.variable}"

    graph = graph_of(base.replace("{on_error}", ""), outputs)
    run, error = run_graph(graph, {"input": ROWS}, FakeModels(failures={"trees": [unavailable()]}))
    assert isinstance(error, StepFailed) and error.step == "trees" and error.status == 503
    assert run.steps["trees"].status == "failed"

    graph = graph_of(base.replace("{on_error}", ", onError: skip"), outputs)
    run, result = run_graph(graph, {"input": ROWS}, FakeModels(failures={"trees": [unavailable()]}))
    assert set(result) == {"ridge"}
    assert response_parameters(run)["steps_failed"] == "trees"

    graph = graph_of(base.replace("{on_error}", ", onError: {default: {variable: [[0.0]]}}"), outputs)
    run, result = run_graph(graph, {"input": ROWS}, FakeModels(failures={"trees": [unavailable()]}))
    np.testing.assert_allclose(result["mean"], ROWS[:, :1])  # (2x + 0) / 2
    assert response_parameters(run)["steps_defaulted"] == "trees"


def test_retries_pass_what_may_pass_and_never_a_bad_request():
    steps = "[{name: a, model: diabetes, inputs: {input: $input.input}, retry: {attempts: 3, backoff: 0.01}}]"
    graph = graph_of(steps, "{p: a.variable}")
    models = FakeModels(failures={"diabetes": [unavailable(), unavailable()]})
    run, outputs = run_graph(graph, {"input": ROWS}, models)
    assert run.steps["a"].attempts == 3 and "p" in outputs

    models = FakeModels(failures={"diabetes": [StepCallError("bad input", 400, retryable=False)]})
    run, error = run_graph(graph, {"input": ROWS}, models)
    assert isinstance(error, StepFailed) and error.status == 400 and run.steps["a"].attempts == 1


def test_a_step_over_its_timeout_fails_with_504_and_the_rest_is_cancelled():
    steps = ENSEMBLE_STEPS.replace(
        "trees, inputs: {input: $input.input}", "trees, inputs: {input: $input.input}, timeout: 50ms"
    )
    graph = graph_of(steps, "{p: trees.variable}")
    run, error = run_graph(graph, {"input": ROWS}, FakeModels(delays={"trees": 5.0, "diabetes": 5.0}))
    assert isinstance(error, StepFailed) and error.status == 504 and "within 0.05 s (the step's timeout)" in str(error)


def test_runs_are_kept_for_a_bounded_number_and_time():
    store = RunStore(limit=2, max_age=60)
    runs = [Run("p", "1", {}) for _ in range(3)]
    for run in runs:
        store.add(run)
    assert store.get(runs[0].id) is None and store.get(runs[2].id) is runs[2]
    for run in runs[1:]:
        run.started -= 120  # runs are kept in the order they started: the oldest go first
    assert store.get(runs[2].id) is None and not store.runs


@pytest.mark.parametrize("text", ["__import__('os')", "a.b.__class__", "lambda: 1", "x", "a.b if 1 else 2"])
def test_expressions_allow_only_tensor_arithmetic(text):
    with pytest.raises(expressions.ExpressionError):
        expressions.parse(text)


def test_a_schedule_whose_request_the_pipeline_cannot_take_is_refused():
    from pipelines.repository import check_schedules

    text = pipeline_yaml("[{name: a, model: diabetes, inputs: {input: $input.input}}]", "{p: a.variable}")
    text += """  triggers:
    schedule:
      - schedule: "@every 1m"
        request: {inputs: [{name: input, datatype: FP32, shape: [1, 3], data: [1, 2, 3]}]}
"""
    graph = build_graph(parse(text, "s.yaml"), MODELS)
    with pytest.raises(GraphError, match=r"triggers.schedule\[0\].request: input 'input' must have shape \[-1, 10\]"):
        check_schedules(graph)
