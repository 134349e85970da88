"""A seeded synthetic run-to-failure fleet, in the spirit of NASA's C-MAPSS turbofan data.

Every machine runs from new until it fails after a random lifetime. Each cycle records three operating settings and
twelve sensors: some follow exponential wear (flat for most of the life, steep near the end), some drift linearly over
the life, some carry no wear signal at all; all carry Gaussian noise, a per-machine offset and a response to throttle.

The model recipes train on this fleet, the sensors simulator streams it (`readings`, `stream`), and the features
service turns the last `WINDOW` readings of one machine into the feature vector the models take (`window_features`),
computed exactly as `rolling_features` computes it for training.
"""

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# Readings per feature window. A machine with fewer readings than this has no features yet (no prediction).
WINDOW = 30
# Lifetimes are MIN_LIFETIME plus a gamma-distributed excess: at least 128 cycles, 208 on average (C-MAPSS FD001: 206).
MIN_LIFETIME = 128
LIFETIME_SHAPE, LIFETIME_SCALE = 4.0, 20.0


@dataclass(frozen=True)
class Setting:
    name: str
    low: float  # drawn uniformly in [low, high) every cycle
    high: float


@dataclass(frozen=True)
class Sensor:
    name: str
    baseline: float  # value of a new machine at mid throttle, without noise
    noise: float  # standard deviation of the noise, in the sensor's units; drift, load and offsets are multiples of it
    wear: str  # how it follows degradation: "exponential", "linear" or "none"
    drift: float  # change from new to failure, in noise standard deviations (the sign is the direction)
    load: float  # change from mid to full throttle, in noise standard deviations


_THROTTLE = Setting("throttle", 70.0, 100.0)  # throttle resolver angle, degrees; the sensors respond to it
SETTINGS = (
    Setting("altitude", 25.0, 42.0),  # thousand feet
    Setting("mach", 0.60, 0.84),
    _THROTTLE,
)
SENSORS = (
    Sensor("fan_inlet_temp", 518.67, 0.30, "none", 0.0, 0.0),
    Sensor("fan_inlet_pressure", 14.62, 0.02, "none", 0.0, 1.0),
    Sensor("lpc_outlet_temp", 642.5, 0.50, "exponential", 3.0, 1.0),
    Sensor("hpc_outlet_temp", 1590.0, 6.0, "exponential", 3.0, 1.5),
    Sensor("lpt_outlet_temp", 1408.0, 9.0, "exponential", 4.0, 1.5),
    Sensor("hpc_outlet_pressure", 553.5, 0.90, "exponential", -3.5, 1.0),
    Sensor("static_pressure", 47.5, 0.27, "exponential", 3.5, 0.5),
    Sensor("hpt_coolant_bleed", 38.8, 0.18, "exponential", -3.0, 0.5),
    Sensor("fan_speed", 2388.1, 0.07, "linear", 2.5, 2.0),
    Sensor("core_speed", 9050.0, 22.0, "linear", 2.0, 2.0),
    Sensor("fuel_flow_ratio", 521.4, 0.74, "linear", -2.5, 1.0),
    Sensor("bypass_ratio", 8.44, 0.04, "linear", 2.0, 0.0),
)
CHANNELS = tuple(setting.name for setting in SETTINGS) + tuple(sensor.name for sensor in SENSORS)
STATISTICS = ("last", "mean", "slope")
# The model's input, in order: every statistic of every channel ("throttle_last", "throttle_mean", ...).
FEATURES = tuple(f"{channel}_{statistic}" for channel in CHANNELS for statistic in STATISTICS)

# Separate random streams per machine: its parameters and its readings do not depend on which other machines exist.
_PARAMETERS, _READINGS = 0, 1


@dataclass(frozen=True)
class Machine:
    """One machine's hidden truth: when it fails and how it wears."""

    id: int
    seed: int
    lifetime: int  # cycles it runs; it fails on the last one
    wear_rate: float  # how sharply exponential wear steepens near the end (higher: later and steeper)
    initial_wear: float  # wear it starts with, as a fraction of the wear at failure
    offsets: tuple[float, ...]  # per sensor, a manufacturing offset in noise standard deviations


@dataclass(frozen=True)
class Reading:
    """What a machine reports on one cycle, with the ground truth a real fleet would learn only later."""

    machine: int
    cycle: int  # 1 on the first cycle of a new machine
    values: dict[str, float]  # every channel, in CHANNELS order
    rul: int  # remaining useful life: cycles left before failure, 0 on the failing cycle
    failed: bool  # this is the machine's last cycle


class Table(NamedTuple):
    """One row per full window of every machine: features, the RUL at the window's last cycle, and the machine."""

    features: np.ndarray  # float32 [rows, len(FEATURES)]
    rul: np.ndarray  # int64 [rows]
    machine: np.ndarray  # int64 [rows]


def make_machine(seed: int, machine_id: int) -> Machine:
    """Machine `machine_id` of the fleet `seed`: the same arguments always give the same machine."""
    rng = np.random.default_rng([seed, machine_id, _PARAMETERS])
    return Machine(
        id=machine_id,
        seed=seed,
        lifetime=MIN_LIFETIME + round(rng.gamma(LIFETIME_SHAPE, LIFETIME_SCALE)),
        wear_rate=float(rng.uniform(3.0, 6.0)),
        initial_wear=float(rng.uniform(0.0, 0.1)),
        offsets=tuple(float(offset) for offset in rng.normal(0.0, 0.5, len(SENSORS))),
    )


def make_fleet(seed: int, count: int, first: int = 0) -> list[Machine]:
    """Machines `first` to `first + count - 1` of the fleet `seed`.

    Machines are independent draws, so splitting a fleet by machine id gives a held-out set of unseen machines.
    """
    return [make_machine(seed, machine_id) for machine_id in range(first, first + count)]


def wear(machine: Machine, kind: str) -> np.ndarray:
    """Degradation on each cycle of the machine's life, from its initial wear to 1 on the failing cycle."""
    used = np.arange(1, machine.lifetime + 1) / machine.lifetime  # fraction of the life used
    if kind == "none":
        return np.zeros_like(used)
    if kind == "linear":
        shape = used
    else:
        shape = np.expm1(machine.wear_rate * used) / np.expm1(machine.wear_rate)
    return machine.initial_wear + (1.0 - machine.initial_wear) * shape


def simulate(machine: Machine) -> np.ndarray:
    """Every reading of the machine's life as float64 [lifetime, len(CHANNELS)], columns in CHANNELS order.

    Deterministic for the machine; `readings` and `table` are views of this one array.
    """
    rng = np.random.default_rng([machine.seed, machine.id, _READINGS])
    settings = np.column_stack([rng.uniform(setting.low, setting.high, machine.lifetime) for setting in SETTINGS])
    throttle = settings[:, SETTINGS.index(_THROTTLE)]
    load = (throttle - (_THROTTLE.low + _THROTTLE.high) / 2) / ((_THROTTLE.high - _THROTTLE.low) / 2)  # -1 to 1
    sensors = []
    for sensor, offset in zip(SENSORS, machine.offsets, strict=True):
        noise = rng.standard_normal(machine.lifetime)
        level = offset + sensor.drift * wear(machine, sensor.wear) + sensor.load * load + noise
        sensors.append(sensor.baseline + sensor.noise * level)
    return np.column_stack([settings, *sensors])


def readings(machine: Machine) -> Iterator[Reading]:
    """The machine's readings, cycle by cycle, until it fails."""
    for index, row in enumerate(simulate(machine)):
        cycle = index + 1
        values = {channel: float(value) for channel, value in zip(CHANNELS, row, strict=True)}
        yield Reading(machine.id, cycle, values, rul=machine.lifetime - cycle, failed=cycle == machine.lifetime)


def stream(machines: Sequence[Machine]) -> Iterator[Reading]:
    """Readings of machines running side by side: cycle 1 of every machine, then cycle 2, ...

    A machine drops out after its failing cycle; the stream ends when the last machine has failed.
    """
    running = [readings(machine) for machine in machines]
    while running:
        still_running = []
        for machine_readings in running:
            reading = next(machine_readings, None)
            if reading is not None:
                yield reading
                still_running.append(machine_readings)
        running = still_running


def rolling_features(history: np.ndarray) -> np.ndarray:
    """Features of every full window of one machine's history (float [cycles, len(CHANNELS)], oldest first).

    Returns float32 [cycles - WINDOW + 1, len(FEATURES)]: row i describes the window ending at history[i + WINDOW - 1];
    no rows when the history is shorter than WINDOW. Per channel: last value, mean, least-squares slope per cycle.
    """
    history = np.asarray(history, dtype=np.float64)
    if len(history) < WINDOW:
        return np.empty((0, len(FEATURES)), dtype=np.float32)
    return windows_features(np.lib.stride_tricks.sliding_window_view(history, WINDOW, axis=0))


def windows_features(windows: np.ndarray) -> np.ndarray:
    """Features (float32 [rows, len(FEATURES)]) of windows given as float64 [rows, channels, WINDOW], each a
    window's readings oldest first: one pass for any number of windows, of one machine or of many."""
    centred_cycle = np.arange(WINDOW) - (WINDOW - 1) / 2
    slope_weights = centred_cycle / np.sum(centred_cycle**2)  # slope = sum(weights * values) for a least-squares line
    statistics = np.stack([windows[..., -1], windows.mean(axis=-1), windows @ slope_weights], axis=-1)
    return statistics.reshape(len(windows), len(FEATURES)).astype(np.float32)  # channel-major, as FEATURES


def window_features(values: Iterable[Mapping[str, float]]) -> np.ndarray | None:
    """The feature vector (float32 [len(FEATURES)]) of one machine's last WINDOW readings, oldest first.

    `values` are readings' value dicts (a list or a deque); only the last WINDOW are used. Returns None while the
    machine has fewer than WINDOW readings: its window is not full yet, so there is nothing to predict from.
    """
    window = list(values)[-WINDOW:]
    if len(window) < WINDOW:
        return None
    missing = sorted({channel for reading in window for channel in CHANNELS if channel not in reading})
    if missing:
        raise ValueError(f"readings lack channels {missing}; every reading needs {list(CHANNELS)}")
    history = np.array([[reading[channel] for channel in CHANNELS] for reading in window], dtype=np.float64)
    return rolling_features(history)[0]


def table(machines: Sequence[Machine], every: int = 1) -> Table:
    """Training rows of the given machines: the features of every full window, with the RUL when it ends.

    `every`=n keeps every n-th window of each machine (the first full one, then n cycles later, ...).
    """
    features, rul, machine_ids = [], [], []
    for machine in machines:
        rows = rolling_features(simulate(machine))[::every]
        last_cycles = np.arange(WINDOW, machine.lifetime + 1)[::every]
        features.append(rows)
        rul.append(machine.lifetime - last_cycles)
        machine_ids.append(np.full(len(rows), machine.id))
    return Table(np.concatenate(features), np.concatenate(rul).astype(np.int64), np.concatenate(machine_ids))


def digest(*tables: Table) -> str:
    """SHA-256 of the tables' features and RUL: names the exact data a model was trained and measured on."""
    hasher = hashlib.sha256()
    for rows in tables:
        hasher.update(rows.features.tobytes())
        hasher.update(rows.rul.tobytes())
    return hasher.hexdigest()
