"""The bounded memory of ids an idempotent consumer has taken: what it holds, how it is stored, the earlier layout."""

from tandem.seen import SeenIds


def test_it_remembers_the_newest_ids_up_to_its_capacity():
    seen = SeenIds(3)
    for id_ in ("a", "b", "c", "d"):
        seen.add(id_)
    assert "a" not in seen
    assert all(id_ in seen for id_ in ("b", "c", "d"))
    assert "e" not in seen


def test_it_travels_through_the_state_store_as_a_short_string():
    seen = SeenIds(256)
    ids = [f"5b0f3f6e-8d0c-4c1e-9a53-{index:012d}" for index in range(256)]
    for id_ in ids:
        seen.add(id_)
    state = seen.to_state()
    assert isinstance(state, str)
    assert len(state) < len("".join(ids)) / 3
    assert SeenIds.from_state(256, state) == seen


def test_a_list_of_ids_saved_earlier_reads_as_the_same_memory():
    ids = ["x:1", "x:2", "x:3"]
    seen = SeenIds(2)
    for id_ in ids:
        seen.add(id_)
    assert SeenIds.from_state(2, ids) == seen
    assert SeenIds.from_state(2, None) == SeenIds(2)
