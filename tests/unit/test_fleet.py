"""The synthetic run-to-failure fleet: deterministic per seed, degradation visible, window features well defined."""

from collections import deque

import numpy as np
import pytest

from tandem import fleet


def test_the_same_seed_gives_the_same_fleet_and_another_seed_another():
    first, again, other = fleet.make_fleet(7, 5), fleet.make_fleet(7, 5), fleet.make_fleet(8, 5)
    assert first == again
    for machine, twin in zip(first, again, strict=True):
        np.testing.assert_array_equal(fleet.simulate(machine), fleet.simulate(twin))
    assert [machine.lifetime for machine in first] != [machine.lifetime for machine in other]
    assert not np.array_equal(
        fleet.simulate(first[0])[: fleet.MIN_LIFETIME], fleet.simulate(other[0])[: fleet.MIN_LIFETIME]
    )


def test_a_machine_does_not_depend_on_the_rest_of_the_fleet():
    machine = fleet.make_fleet(3, 10)[6]
    assert fleet.make_fleet(3, 2, first=6)[0] == machine == fleet.make_machine(3, 6)


def test_lifetimes_are_plausible():
    lifetimes = np.array([machine.lifetime for machine in fleet.make_fleet(0, 200)])
    assert lifetimes.min() >= fleet.MIN_LIFETIME
    assert 170 < lifetimes.mean() < 250  # C-MAPSS FD001: 206
    assert lifetimes.std() > 25  # varied enough that the cycle count alone does not give the RUL


def test_readings_count_down_to_the_failing_cycle():
    machine = fleet.make_machine(0, 0)
    readings = list(fleet.readings(machine))
    assert len(readings) == machine.lifetime
    assert [reading.cycle for reading in readings] == list(range(1, machine.lifetime + 1))
    assert [reading.rul for reading in readings] == list(range(machine.lifetime - 1, -1, -1))
    assert [reading.failed for reading in readings] == [False] * (machine.lifetime - 1) + [True]
    assert all(reading.machine == machine.id for reading in readings)
    assert list(readings[0].values) == list(fleet.CHANNELS)
    np.testing.assert_array_equal([list(reading.values.values()) for reading in readings], fleet.simulate(machine))


def test_stream_interleaves_machines_cycle_by_cycle_until_each_fails():
    machines = fleet.make_fleet(0, 4)
    streamed = list(fleet.stream(machines))
    assert len(streamed) == sum(machine.lifetime for machine in machines)
    assert [reading.cycle for reading in streamed] == sorted(reading.cycle for reading in streamed)
    assert [reading.machine for reading in streamed[:8]] == [0, 1, 2, 3] * 2
    assert sum(reading.failed for reading in streamed) == len(machines)
    for machine in machines:
        own = [reading for reading in streamed if reading.machine == machine.id]
        assert own == list(fleet.readings(machine))


def correlations_with_rul(machines: list[fleet.Machine]) -> dict[str, float]:
    history = np.concatenate([fleet.simulate(machine) for machine in machines])
    rul = np.concatenate([machine.lifetime - np.arange(1, machine.lifetime + 1) for machine in machines])
    return {channel: np.corrcoef(history[:, index], rul)[0, 1] for index, channel in enumerate(fleet.CHANNELS)}


def test_wearing_sensors_follow_the_remaining_life_and_the_others_do_not():
    # Single readings are noisy (about 0.3 to 0.5 for the wearing sensors); the windows the models see are less so.
    correlations = correlations_with_rul(fleet.make_fleet(0, 40))
    for sensor in fleet.SENSORS:
        if sensor.wear == "none":
            assert abs(correlations[sensor.name]) < 0.1, sensor.name
        else:
            # Readings drift away from baseline as the RUL shrinks: the sign is opposite to the drift's.
            assert -np.sign(sensor.drift) * correlations[sensor.name] > 0.2, sensor.name
    for setting in fleet.SETTINGS:
        assert abs(correlations[setting.name]) < 0.1, setting.name


def test_exponential_wear_is_flat_early_and_steep_late():
    machine = fleet.make_machine(0, 0)
    wear = fleet.wear(machine, "exponential")
    quarter = machine.lifetime // 4
    assert wear[0] == pytest.approx(machine.initial_wear, abs=0.01)
    assert wear[-1] == pytest.approx(1.0)
    assert wear[quarter] - wear[0] < wear[-1] - wear[-quarter]
    np.testing.assert_allclose(fleet.wear(machine, "linear")[[0, -1]], [machine.initial_wear, 1.0], atol=0.01)
    assert not fleet.wear(machine, "none").any()


def test_features_have_the_documented_names_and_length():
    assert len(fleet.FEATURES) == len(fleet.CHANNELS) * len(fleet.STATISTICS) == len(set(fleet.FEATURES))
    assert fleet.FEATURES[:3] == ("altitude_last", "altitude_mean", "altitude_slope")
    history = [reading.values for reading in fleet.readings(fleet.make_machine(0, 1))]
    features = fleet.window_features(history)
    assert features.dtype == np.float32 and features.shape == (len(fleet.FEATURES),)


def test_a_machine_without_a_full_window_has_no_features_yet():
    history = [reading.values for reading in fleet.readings(fleet.make_machine(0, 1))]
    for length in (0, 1, fleet.WINDOW - 1):
        assert fleet.window_features(history[:length]) is None
    assert fleet.window_features(history[: fleet.WINDOW]) is not None
    assert fleet.rolling_features(fleet.simulate(fleet.make_machine(0, 1))[: fleet.WINDOW - 1]).shape == (
        0,
        len(fleet.FEATURES),
    )


def test_online_features_equal_the_training_rows():
    machine = fleet.make_machine(0, 2)
    rows = fleet.table([machine])
    window = deque(maxlen=fleet.WINDOW)  # what a features service keeps per machine
    online = []
    for reading in fleet.readings(machine):
        window.append(reading.values)
        features = fleet.window_features(window)
        if features is not None:
            online.append(features)
    np.testing.assert_array_equal(np.array(online), rows.features)
    # A longer history is cut to its last WINDOW readings.
    history = [reading.values for reading in fleet.readings(machine)]
    np.testing.assert_array_equal(fleet.window_features(history[:100]), rows.features[100 - fleet.WINDOW])


def test_last_mean_and_slope_of_a_straight_line():
    cycles = np.arange(fleet.WINDOW, dtype=np.float64)
    history = [{channel: 3.0 + 2.0 * cycle for channel in fleet.CHANNELS} for cycle in cycles]
    features = dict(zip(fleet.FEATURES, fleet.window_features(history), strict=True))
    assert features["throttle_last"] == pytest.approx(3.0 + 2.0 * (fleet.WINDOW - 1))
    assert features["throttle_mean"] == pytest.approx(3.0 + 2.0 * cycles.mean())
    assert features["core_speed_slope"] == pytest.approx(2.0)


def test_a_reading_without_every_channel_is_refused():
    history = [reading.values for reading in fleet.readings(fleet.make_machine(0, 1))][: fleet.WINDOW]
    history[-1] = {key: value for key, value in history[-1].items() if key != "fan_speed"}
    with pytest.raises(ValueError, match="fan_speed"):
        fleet.window_features(history)


def test_table_rows_are_windows_labelled_with_the_rul_at_their_end():
    machines = fleet.make_fleet(0, 3)
    rows = fleet.table(machines)
    assert len(rows.rul) == sum(machine.lifetime - fleet.WINDOW + 1 for machine in machines)
    first = machines[0]
    own = rows.rul[rows.machine == first.id]
    assert own[0] == first.lifetime - fleet.WINDOW and own[-1] == 0
    sparse = fleet.table(machines, every=5)
    np.testing.assert_array_equal(sparse.features[: len(own[::5])], rows.features[: len(own)][::5])
    assert fleet.digest(rows) == fleet.digest(fleet.table(fleet.make_fleet(0, 3))) != fleet.digest(sparse)
