"""Host work split over processes (`sv_jax.distributed`): the shares partition a dataset in order, and
a bad item in one process's share stops every process with its line. The real cluster runs in
tests/test_main_job.py; here the process index and the exchange are stood in for."""

import pickle

import jax
import pytest

from sv_jax import distributed
from sv_jax.errors import UserError


def as_process(monkeypatch, index: int, count: int) -> None:
    monkeypatch.setattr(jax, "process_index", lambda: index)
    monkeypatch.setattr(jax, "process_count", lambda: count)


@pytest.mark.parametrize("count", [0, 1, 5, 8, 13])
@pytest.mark.parametrize("processes", [1, 2, 3, 4])
def test_shares_cover_the_items_once_in_order_and_differ_by_one_at_most(monkeypatch, count, processes):
    shares = []
    for index in range(processes):
        as_process(monkeypatch, index, processes)
        shares.append(distributed.share(count))
    assert [i for part in shares for i in part] == list(range(count))
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_a_bad_item_in_another_process_share_stops_this_process_with_its_line(monkeypatch):
    as_process(monkeypatch, 0, 2)
    other = ([], "data.jsonl:7: 'actions' must be a list of solve, verify pairs")
    monkeypatch.setattr(distributed, "_allgather_objects", lambda mine: [mine, other])
    with pytest.raises(UserError, match="data.jsonl:7"):
        distributed.map_shares(lambda x: x * 2, list(range(10)), "trajectories")


def test_results_come_back_in_item_order_from_every_process(monkeypatch):
    as_process(monkeypatch, 1, 2)
    first = ([i * i for i in range(5)], None)  # what process 0 computed of its share, 0-4
    monkeypatch.setattr(distributed, "_allgather_objects", lambda mine: [first, mine])
    assert distributed.map_shares(lambda x: x * x, list(range(9)), "questions") == [i * i for i in range(9)]
    monkeypatch.setattr(distributed, "_allgather_objects", lambda mine: [{0: "a", 2: "c"}, mine])
    assert distributed.gather_by_index({1: "b"}, 3) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="index 3"):
        distributed.gather_by_index({1: "b"}, 4)


class KeyValueStore:
    """The coordination service's key-value store, as one process sees it: the other process's
    values are already there."""

    def __init__(self):
        self.values: dict[str, bytes] = {}

    def key_value_set_bytes(self, key: str, value: bytes) -> None:
        assert key not in self.values  # the service refuses to overwrite a key
        self.values[key] = value

    def key_value_set(self, key: str, value: str) -> None:
        self.key_value_set_bytes(key, value.encode())

    def blocking_key_value_get_bytes(self, key: str, timeout_ms: int) -> bytes:
        return self.values[key]

    def blocking_key_value_get(self, key: str, timeout_ms: int) -> str:
        return self.values[key].decode()

    def key_value_delete(self, key: str) -> None:
        del self.values[key]


def test_values_are_exchanged_in_pieces_and_each_exchange_forgets_the_one_before(monkeypatch):
    """Two exchanges as process 1 of 2, with pieces of 5 bytes: every value arrives whole, in process
    order, and after the second only the second's keys of this process are left (and the other's)."""
    as_process(monkeypatch, 1, 2)
    store = KeyValueStore()
    monkeypatch.setattr(distributed, "_client", lambda: store)
    monkeypatch.setattr(distributed, "_exchanges", iter([7, 8]))
    monkeypatch.setattr(distributed, "_previous_keys", [])
    monkeypatch.setattr(distributed, "CHUNK_BYTES", 5)
    for number, other in ((7, {"rows": list(range(20))}), (8, "second")):
        data = pickle.dumps(other)
        pieces = [data[i : i + 5] for i in range(0, len(data), 5)]
        for i, piece in enumerate(pieces):
            store.key_value_set_bytes(f"sv_jax/{number}/0/{i}", piece)
        store.key_value_set(f"sv_jax/{number}/0/pieces", str(len(pieces)))
    assert distributed._allgather_objects(["mine", 1]) == [{"rows": list(range(20))}, ["mine", 1]]
    assert distributed._allgather_objects("again") == ["second", "again"]
    assert {key.split("/")[1] for key in store.values if key.split("/")[2] == "1"} == {"8"}
