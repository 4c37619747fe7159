"""A broker that is not a controller voter (a learner, docs/DEPLOYMENT.md "Adding a broker")
joins a running 3-voter cluster: it follows the metadata log, registers, is listed by every
broker once unfenced, takes replicas of a new topic, and serves as leader and follower of
acks=all writes while the voter set stays the three."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from conftest import ClusterBroker
from test_cluster_ops import create_replicated

pytestmark = pytest.mark.timeout(120)


def test_a_learner_joins_takes_replicas_and_serves(make_cluster):
    c = make_cluster(brokers=3)
    learner = ClusterBroker(c.workdir, 4, c.base, c.voters)
    c.brokers.append(learner)  # torn down with the cluster
    learner.start(wait=False)
    c.wait_formed()
    for via in (1, 2, 3, 4):
        md = c.metadata(via=via)
        assert sorted(b["node_id"] for b in md["brokers"]) == [1, 2, 3, 4], (via, md["brokers"])
        assert md["controller_id"] in (1, 2, 3), md  # a learner never leads the quorum

    # Four partitions of RF 3 over four brokers: placement gives the learner replicas and
    # (rotating the first replica) the leadership of one.
    create_replicated(c.bootstrap, "grow", partitions=4, rf=3, config={"min.insync.replicas": "2"})
    c.wait_until(lambda: all(c.leader_of("grow", p) for p in range(4)), 30, "every partition led")
    parts = c.metadata(["grow"], via=4)["topics"]["grow"]["partitions"]
    assert any(p["leader"] == 4 for p in parts), parts
    assert sum(4 in p["replicas"] for p in parts) == 3, parts

    acked: dict[int, list[int]] = {p: [] for p in range(4)}

    def report(err, msg):
        assert err is None, err
        acked[msg.partition()].append(msg.offset())

    prod = Producer({"bootstrap.servers": learner.bootstrap, "acks": "all",
                     "enable.idempotence": True, "linger.ms": 5})
    for i in range(400):
        prod.produce("grow", value=f"v{i}".encode(), partition=i % 4, on_delivery=report)
    assert prod.flush(30) == 0
    assert all(sorted(o) == list(range(100)) for o in acked.values()), acked

    # Every ISR holds all three replicas once the followers caught up, the learner's too.
    def full_isr() -> bool:
        ps = c.metadata(["grow"], via=4)["topics"]["grow"]["partitions"]
        return all(sorted(p["isr"]) == sorted(p["replicas"]) for p in ps)
    c.wait_until(full_isr, 30, "every ISR full")

    cons = Consumer({"bootstrap.servers": c[1].bootstrap, "group.id": "learner-read",
                     "enable.auto.commit": False})
    cons.assign([TopicPartition("grow", p, 0) for p in range(4)])
    got = set()
    for _ in range(200):
        for m in cons.consume(num_messages=500, timeout=0.5):
            if m.error() is None:
                got.add(m.value())
        if len(got) == 400:
            break
    cons.close()
    assert got == {f"v{i}".encode() for i in range(400)}
