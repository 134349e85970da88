"""bench.summary on results files: each goal's figure and verdict, the newest file of a benchmark chosen, a missing
benchmark named as not measured."""

import json
from pathlib import Path

import numpy as np
import pytest

from bench.report import paired_ratio
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


def test_batching_is_judged_round_by_round_where_rounds_ran_side_by_side():
    def case(*rates: float) -> dict:
        return {"requests_per_s": float(np.median(rates)), "rounds": [{"requests_per_s": rate} for rate in rates]}

    # The machine slowed down in the second round, for both alike: each round's ratio is 1.
    on, off = case(100, 50, 100), case(100, 50, 100)
    assert paired_ratio(on, off) == 1
    # The machine's speed changed between off and on of the second round: the medians would say 95 / 50.
    assert paired_ratio(case(95, 95, 47.5), case(100, 50, 50)) == pytest.approx(0.95)
    # Without matching rounds, the medians.
    assert paired_ratio({"requests_per_s": 90.0}, case(100, 50, 200)) == 0.9
