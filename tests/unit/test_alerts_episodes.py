"""One alert per machine per degradation episode: thresholds with hysteresis, idempotent, robust to late ones."""

from alerts.episodes import MachineState, Thresholds

THRESHOLDS = Thresholds(open_at=0.7, close_at=0.3, close_after=3)


def run(probabilities: list[float], state: MachineState | None = None) -> tuple[MachineState, list]:
    state = state or MachineState()
    changes = []
    for index, probability in enumerate(probabilities):
        prediction = {"failure_probability": probability, "reading": f"r{index}"}
        change = state.apply("m", f"p{index}", float(index), prediction, THRESHOLDS)
        if change is not None:
            changes.append((index, change.kind, change.alert_id))
    return state, changes


def test_a_wavering_probability_opens_one_alert_not_a_storm():
    _, changes = run([0.1, 0.75, 0.65, 0.8, 0.5, 0.9, 0.71, 0.95])
    assert changes == [(1, "opened", "m-1")]


def test_an_episode_closes_after_enough_calm_predictions_and_the_next_one_is_a_new_alert():
    state, changes = run([0.9, 0.2, 0.2, 0.5, 0.2, 0.2, 0.2, 0.1, 0.8])
    assert changes == [(0, "opened", "m-1"), (6, "closed", "m-1"), (8, "opened", "m-2")]
    assert state.open == "m-2" and state.episodes == 2 and state.predictions == 9


def test_a_late_prediction_is_counted_but_does_not_judge_the_machine():
    state, _ = run([0.1, 0.1])
    change = state.apply("m", "late", -5.0, {"failure_probability": 0.99}, THRESHOLDS)
    assert change is None
    assert state.open is None and state.predictions == 3 and state.last["failure_probability"] == 0.1


def test_state_survives_the_round_trip_through_the_store():
    state, _ = run([0.9, 0.1])
    again = MachineState.from_state(state.to_state())
    assert again == state
