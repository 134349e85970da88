"""The simulator's ticks: one reading of every running machine per tick, machines of a slot one after the other."""

from sensors.simulate import FIRST_UNSEEN, ticks
from tandem import fleet


def test_each_slot_runs_its_lives_one_after_the_other_under_one_name():
    readings = [reading for batch in ticks(2, 0, replace=False, prefix="s-", lives=3) for reading in batch]
    for slot in range(2):
        machines = [fleet.make_machine(0, FIRST_UNSEEN + slot + life * 2) for life in range(3)]
        of_slot = [reading for reading in readings if reading["machine"] == f"s-{slot}"]
        assert len(of_slot) == sum(machine.lifetime for machine in machines)
        assert [reading["id"].split(":")[1] for reading in of_slot] == [
            str(machine.id) for machine in machines for _ in range(machine.lifetime)
        ]


def test_one_life_ends_with_the_first_failure_of_each_slot():
    batches = list(ticks(3, 0, replace=False))
    assert len(batches) == max(fleet.make_machine(0, FIRST_UNSEEN + slot).lifetime for slot in range(3))
