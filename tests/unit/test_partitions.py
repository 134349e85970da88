"""Readings partitioned by machine: a machine's partition is fixed across processes, every partition has exactly one
reader among the replicas, and replica counts that cannot share the partitions are refused."""

import subprocess
import sys

import pytest

from tandem import partitions


def test_a_machines_partition_is_the_same_in_another_process():
    machines = [f"machine-{index}" for index in range(50)]
    here = [partitions.partition(machine, 7) for machine in machines]
    script = f"from tandem import partitions; print([partitions.partition(m, 7) for m in {machines!r}])"
    # PYTHONHASHSEED differs between processes: hash() would give other partitions there.
    there = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert there.strip() == str(here)
    assert set(here) == set(range(7)), "50 machines should reach all 7 partitions"


@pytest.mark.parametrize(("replicas", "count"), [(1, 1), (1, 4), (2, 4), (3, 4), (4, 4), (3, 12)])
def test_every_partition_has_exactly_one_reader(replicas, count):
    read = [index for replica in range(replicas) for index in partitions.owned(replica, replicas, count)]
    assert sorted(read) == list(range(count))


@pytest.mark.parametrize(("replica", "replicas", "count"), [(2, 2, 4), (-1, 2, 4), (0, 5, 4), (0, 0, 4)])
def test_replicas_that_cannot_share_the_partitions_are_refused(replica, replicas, count):
    with pytest.raises(ValueError, match="cannot read"):
        partitions.owned(replica, replicas, count)


def test_one_partition_keeps_the_topics_name():
    assert partitions.topic("readings", 1, 0) == "readings"
    assert partitions.topic("readings", 4, 3) == "readings.3"


@pytest.mark.parametrize("count", [2, 4, 8])
def test_machines_named_in_sequence_spread_over_every_partition(count):
    # CRC-32 would put machine-0 to machine-3 on one partition of 2 or 4: it is linear in its input's bits.
    machines = [f"machine-{index}" for index in range(16 * count)]
    spread = [sum(partitions.partition(machine, count) == index for machine in machines) for index in range(count)]
    assert min(spread) >= 8, f"{spread}: 16 machines per partition expected, give or take"
