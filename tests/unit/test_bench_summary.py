"""bench.summary on results files: each goal's figure and verdict, the newest file of a benchmark chosen, a missing
benchmark named as not measured."""

import json
from pathlib import Path

from bench.summary import SOURCES, markdown


def pipelines_report(date: str, per_step_ms: float) -> dict:
    layout = {"requests_per_s": {"chain": 90, "slowest step alone": 100}, "ratio": 0.9}
    return {
        "date": date,
        "results": {
            "per_step_ms": per_step_ms,
            "throughput": {"shared core": {**layout, "ratio": 0.7}, "own core": layout},
            "durable": {"steps_per_s": 15.4},
        },
    }


def test_the_newest_results_give_each_goal_its_verdict(tmp_path: Path):
    (tmp_path / "pipelines.json").write_text(json.dumps(pipelines_report("2026-11-01", 0.2)))
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "pipelines.json").write_text(json.dumps(pipelines_report("2026-12-01", 0.6)))
    text = markdown(tmp_path)
    rows = [line for line in text.splitlines() if line.startswith("| pipelines |")]
    assert "| 0.6 ms | **not met** | later/pipelines.json, 2026-12-01 |" in rows[0]
    assert "(shared core) | 0.7x | **not met**" in rows[1]
    assert "(own core) | 0.9x | met" in rows[2]
    assert "| 15.4 | measured |" in rows[3]
    for name in set(SOURCES) - {"pipelines"}:
        assert f"not measured: no {name}.json" in text


def test_the_committed_results_render():
    text = markdown(Path(__file__).resolve().parents[2] / "bench" / "results")
    assert text.startswith("# Goals and figures") and "not measured" not in text
