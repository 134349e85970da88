"""A topic partitioned by machine: each machine's readings on one partition topic, each partition read by one replica.

Redis Streams (like most of Dapr's brokers) spreads a topic over every consumer of an app id, so two replicas of a
subscriber each get part of every machine's readings, and a machine's readings overtake each other between them.
With `partitions` > 1, a machine's readings go to `<topic>.<k>`, k fixed by the machine's name, and replica r of n
subscribes to the partitions k with k % n == r only: every machine's readings reach one replica, in the order they
were stored, as Kafka does with a message key. With one partition the topic keeps its own name.
"""

import hashlib


def partition(machine: str, partitions: int) -> int:
    """The machine's partition: the same in every process and at every start (Python's hash() is not). Not CRC-32:
    it is linear in the bits of its input, so names that differ in their last character (machine-0, machine-1, ...)
    share their low bits and, with 2 or 4 partitions, land on one partition."""
    if partitions == 1:
        return 0
    return int.from_bytes(hashlib.blake2b(machine.encode(), digest_size=8).digest(), "big") % partitions


def topic(base: str, partitions: int, index: int) -> str:
    return base if partitions == 1 else f"{base}.{index}"


def owned(replica: int, replicas: int, partitions: int) -> list[int]:
    """The partitions that replica `replica` of `replicas` reads."""
    if not 0 <= replica < replicas <= partitions:
        raise ValueError(
            f"replica {replica} of {replicas} cannot read {partitions} partitions: need replica < replicas <= partitions"
        )
    return [index for index in range(partitions) if index % replicas == replica]
