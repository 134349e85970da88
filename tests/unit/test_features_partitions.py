"""Which readings topics a features replica subscribes to: none of its own with one partition (the declarative
subscription takes `readings`), its share of the partitions otherwise, in bulk and with the dead-letter topic.
Bad settings tried: a replica index at or past the replica count, more replicas than partitions."""

import asyncio

import pytest
from pydantic import ValidationError

from features import main


def subscriptions(monkeypatch, **changes) -> list[dict]:
    for name, value in changes.items():
        monkeypatch.setattr(main.settings, name, value)
    return asyncio.run(main.subscribe())


def test_with_one_partition_the_app_subscribes_to_nothing_itself(monkeypatch):
    assert subscriptions(monkeypatch, partitions=1) == []


def test_each_replica_subscribes_in_bulk_to_its_partitions_only(monkeypatch):
    topics = {}
    for replica in (0, 1):
        found = subscriptions(monkeypatch, partitions=4, replicas=2, replica=replica)
        topics[replica] = [subscription["topic"] for subscription in found]
        for subscription in found:
            assert subscription["routes"] == {"default": "/events/readings"}
            assert subscription["deadLetterTopic"] == "readings-dead"
            assert subscription["bulkSubscribe"]["enabled"] is True
    assert topics == {0: ["readings.0", "readings.2"], 1: ["readings.1", "readings.3"]}


@pytest.mark.parametrize(
    ("replica", "replicas", "count"), [("2", "2", "4"), ("0", "5", "4")], ids=["index past the count", "too many"]
)
def test_replicas_that_cannot_share_the_partitions_refuse_to_start(monkeypatch, replica, replicas, count):
    monkeypatch.setenv("FEATURES_REPLICA", replica)
    monkeypatch.setenv("FEATURES_REPLICAS", replicas)
    monkeypatch.setenv("FEATURES_PARTITIONS", count)
    with pytest.raises(ValidationError, match="cannot read"):
        main.FeaturesSettings()
