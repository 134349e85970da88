"""The features service's per-machine window: the same features as training, order by timestamp, idempotency."""

import numpy as np

from features.window import ADDED, DUPLICATE, LATE, SLACK, Window
from tandem import fleet


def machine_readings(count: int):
    machine = fleet.make_machine(0, 7)
    return [(f"m:{r.cycle}", float(r.cycle), r.values) for r in fleet.readings(machine)][:count]


def test_each_full_window_gives_exactly_the_training_features():
    readings = machine_readings(45)
    window = Window()
    computed = []
    for reading_id, timestamp, values in readings:
        assert window.add(reading_id, timestamp, values) == ADDED
        window = Window.from_state(window.to_state())  # as it travels through the state store
        computed.append(window.features(reading_id))
    assert all(result is None for result in computed[: fleet.WINDOW - 1])
    history = np.array([[values[c] for c in fleet.CHANNELS] for _, _, values in readings])
    expected = fleet.rolling_features(history)
    for row, result in enumerate(computed[fleet.WINDOW - 1 :]):
        vector, covered = result
        np.testing.assert_array_equal(vector, expected[row])
        assert covered == [reading_id for reading_id, _, _ in readings[row : row + fleet.WINDOW]]


def test_a_reading_seen_before_changes_nothing():
    readings = machine_readings(3)
    window = Window()
    for reading in readings:
        window.add(*reading)
    before = window.to_state()
    assert window.add(*readings[1]) == DUPLICATE
    assert window.to_state() == before
    assert window.count == 3


def test_a_late_reading_lands_in_timestamp_order_and_gets_its_own_window():
    readings = machine_readings(40)
    late = readings.pop(35)
    window = Window()
    for reading in readings:
        window.add(*reading)
    window.add(*late)
    assert [reading_id for _, reading_id in window.readings] == [f"m:{cycle}" for cycle in range(1, 41)]
    history = np.array([[values[c] for c in fleet.CHANNELS] for _, _, values in machine_readings(40)])
    vector, covered = window.features(late[0])
    np.testing.assert_array_equal(vector, fleet.rolling_features(history)[35 - fleet.WINDOW + 1])
    assert covered[-1] == late[0]


def test_the_window_keeps_only_what_it_needs():
    window = Window()
    for reading in machine_readings(100):
        window.add(*reading)
    assert len(window.readings) == fleet.WINDOW + SLACK
    assert window.count == 100


def test_readings_out_of_order_give_each_full_window_exactly_one_prediction():
    """Readings in a scrambled order (as a bulk publish stores them): every reading from the WINDOW-th on is due
    exactly once, with the window of the WINDOW readings ending at it once all are there; a window saved without
    the predicted list counts its full windows as done."""
    readings = machine_readings(45)
    order = [*range(28), 30, 28, 29, *range(31, 45)]  # the 31st reading comes before the 29th and 30th
    window = Window()
    due: list[str] = []
    for index in order:
        window.add(*readings[index])
        window = Window.from_state(window.to_state())
        now_due = window.due()
        due += now_due
        window.predicted += now_due
    assert sorted(due, key=lambda id_: int(id_.split(":")[1])) == [r[0] for r in readings[fleet.WINDOW - 1 :]]
    assert len(set(due)) == len(due)
    history = np.array([[values[c] for c in fleet.CHANNELS] for _, _, values in readings])
    vector, covered = window.features(readings[40][0])
    np.testing.assert_array_equal(vector, fleet.rolling_features(history)[40 - fleet.WINDOW + 1])

    old = window.to_state()
    del old["predicted"]
    assert Window.from_state(old).due() == []


def test_a_reading_delivered_again_after_it_left_the_window_changes_nothing():
    readings = machine_readings(120)
    window = Window()
    for reading in readings:
        window.add(*reading)
    before = window.to_state()
    assert window.add(*readings[0]) == DUPLICATE
    assert window.to_state() == before
    assert window.count == 120


def test_the_due_windows_of_a_machine_give_the_training_features_in_one_pass():
    readings = machine_readings(45)
    window = Window()
    for reading in readings[:28] + [readings[29]]:  # the 29th comes after the 30th
        window.add(*reading)
    assert window.due_windows() == []
    for reading in [readings[28], *readings[30:36]]:
        window.add(*reading)
    history = np.array([[values[c] for c in fleet.CHANNELS] for _, _, values in readings])
    expected = fleet.rolling_features(history)
    due = window.due_windows()
    assert [reading_id for reading_id, _, _ in due] == [f"m:{cycle}" for cycle in range(30, 37)]
    np.testing.assert_array_equal(fleet.windows_features(np.stack([values for _, values, _ in due])), expected[:7])
    for row, (reading_id, _, covered) in enumerate(due):
        assert covered == [r[0] for r in readings[row : row + fleet.WINDOW]]
        assert covered[-1] == reading_id


def test_a_window_saved_in_the_earlier_layout_reads_the_same():
    readings = machine_readings(35)
    window = Window()
    for reading in readings:
        window.add(*reading)
    window.predicted = window.due()[:3]
    earlier = {
        "readings": [
            [timestamp, id_, list(values)]
            for (timestamp, id_), values in zip(window.readings, window.values, strict=True)
        ],
        "seen": [reading_id for reading_id, _, _ in readings],
        "count": window.count,
        "predicted": window.predicted,
    }
    assert Window.from_state(earlier).to_state() == window.to_state()
    assert Window.from_state(window.to_state()).to_state() == window.to_state()


def test_a_reading_later_than_the_slack_is_late_and_changes_nothing():
    """Late by more than SLACK places (redelivered after the readings that followed it, e.g. after the pub/sub's
    processingTimeout): the readings its window needs are gone. It is LATE, not counted without a prediction."""
    readings = machine_readings(100)
    late = readings.pop(50)
    window = Window()
    for reading in readings[: 50 + SLACK]:  # the window keeps the last 40: the one before the late reading is the
        window.add(*reading)  # oldest that is still there
    within = window.to_state()
    for reading in readings[50 + SLACK :]:
        window.add(*reading)
    before = window.to_state()
    assert window.add(*late) == LATE
    assert window.to_state() == before
    assert window.count == 99

    # SLACK places late: it still finds its window, and is due.
    window = Window.from_state(within)
    window.predicted = window.due()
    assert window.add(*late) == ADDED
    assert window.due() == [late[0]]


def test_an_early_reading_is_not_late_while_nothing_left_the_window():
    """A machine's first readings have no window of their own, late or not: while nothing left the window, a
    reading that comes after later ones is added (it completes their windows)."""
    readings = machine_readings(35)
    window = Window()
    for reading in readings[1:]:
        window.add(*reading)
    assert window.add(*readings[0]) == ADDED
    assert window.count == 35
