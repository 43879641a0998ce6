"""Ring 1 for per-queue policies: weighted fair share, caps, rates and priority aging,
as order tables, each test named after the rule it checks. Built as the cluster builds
them: commands applied to a task table, the leader's scheduler planning rounds."""

from __future__ import annotations

import tomllib
from collections import Counter

import pytest

from peer.config import ConfigError, dump_config, parse_config
from peer.protocol.scheduler import Worker
from peer.protocol.settings import QueuePolicy
from tests.test_scheduler import Cluster, echo

BIG = Worker(1, 1)  # one worker; slots set per test


def queues_of(c: Cluster, items: list[list[int]]) -> list[str]:
    return [c.table.tasks[task].queue for task, *_ in items]


def test_saturated_queues_start_in_the_ratio_of_their_weights() -> None:
    policies = {"a": QueuePolicy(weight=3), "b": QueuePolicy(weight=1)}
    c = Cluster("fair", slots=40, queues=policies)
    c.submit(*[echo(queue="a") for _ in range(60)], *[echo(queue="b") for _ in range(60)])
    order = queues_of(c, c.plan([BIG]))
    assert order[:8] == ["a", "a", "a", "b", "a", "a", "a", "b"]
    assert Counter(order) == {"a": 30, "b": 10}


def test_a_weight_below_one_is_served_every_few_rounds() -> None:
    c = Cluster("fair", slots=12, queues={"slow": QueuePolicy(weight=0.5)})
    c.submit(*[echo(queue="slow") for _ in range(20)], *[echo() for _ in range(20)])
    assert Counter(queues_of(c, c.plan([BIG]))) == {"default": 8, "slow": 4}


def test_an_idle_queue_banks_no_credit() -> None:
    c = Cluster("fair", slots=100, queues={"a": QueuePolicy(weight=1), "b": QueuePolicy(weight=1)})
    c.submit(*[echo(queue="a") for _ in range(6)])
    c.run([BIG])  # only a has work: b stays empty
    c.submit(*[echo(queue="a") for _ in range(10)], *[echo(queue="b") for _ in range(10)])
    assert queues_of(c, c.plan([BIG]))[:6] == ["a", "b", "a", "b", "a", "b"]


def test_max_running_caps_a_queue_cluster_wide_counting_what_is_in_flight() -> None:
    c = Cluster("fifo", slots=50, queues={"capped": QueuePolicy(max_running=2)})
    c.submit(*[echo(queue="capped") for _ in range(5)], echo())
    first = c.plan([BIG, Worker(2, 1)])
    assert Counter(queues_of(c, first)) == {"capped": 2, "default": 1}
    assert c.plan([BIG]) == []  # the two are proposed, not applied: still counted
    c.assign(first)
    assert c.plan([BIG]) == []  # now running
    c.finish(1)
    assert queues_of(c, c.plan([BIG])) == ["capped"]


def test_a_rate_limited_queue_starts_within_its_token_bucket() -> None:
    c = Cluster("fifo", slots=100, queues={"slow": QueuePolicy(rate=2.0)})
    c.submit(*[echo(queue="slow") for _ in range(20)])
    burst = c.run([BIG], wall=10.0)
    assert len(burst) == 2  # a full bucket: one second's worth
    assert c.plan([BIG], wall=10.0) == []
    assert len(c.run([BIG], wall=10.5)) == 1  # refilled at 2 per second
    assert len(c.run([BIG], wall=100.0)) == 2  # never more than the bucket holds


def test_a_new_leader_keeps_the_rate_budget_the_log_shows() -> None:
    c = Cluster("fifo", slots=100, queues={"slow": QueuePolicy(rate=2.0)})
    c.submit(*[echo(queue="slow") for _ in range(20)])
    c.run([BIG], wall=10.0)
    c.scheduler.reset(c.table)  # another leader, knowing only the log
    assert c.plan([BIG], wall=10.2) == []  # 0.4 of a token: not yet
    assert len(c.plan([BIG], wall=10.5)) == 1


def test_a_waiting_task_gains_a_priority_level_per_aging_period() -> None:
    c = Cluster("priority", slots=1, priority_aging=1.0)
    c.submit(echo(priority=0), at=0.0)  # task 1
    c.submit(*[echo(priority=9) for _ in range(5)], at=8.5)  # 9 levels up, 8.5 s later
    c.submit(*[echo(priority=9) for _ in range(5)], at=9.5)
    order = []
    for wall in range(10, 21):
        for task, *_ in c.run([BIG], wall=float(wall)):
            order.append(task)
            c.finish(task, at=float(wall))
    assert order.index(1) == 5  # after the five that were ready 9+ levels sooner only


def test_without_aging_priority_is_strict() -> None:
    c = Cluster("priority", slots=20, priority_aging=0.0)
    c.submit(echo(priority=0), at=0.0)
    c.submit(*[echo(priority=9) for _ in range(5)], at=100.0)
    assert [task for task, *_ in c.plan([BIG], wall=200.0)] == [2, 3, 4, 5, 6, 1]


def test_queue_tables_are_read_checked_and_written_back() -> None:
    text = "[cluster]\n[[node]]\nid = 1\nport = 7001\n[queues.fast]\nweight = 3\nmax_running = 2\n"
    config = parse_config(tomllib.loads(text))
    assert config.settings().queues == (("fast", QueuePolicy(weight=3.0, max_running=2)),)
    assert parse_config(tomllib.loads(dump_config(config))) == config
    with pytest.raises(ConfigError, match=r"queues\.fast\.max_running"):
        parse_config(tomllib.loads(text.replace("max_running = 2", "max_running = 0")))
    with pytest.raises(ConfigError, match=r"queues\.fast: only weight"):
        parse_config(tomllib.loads(text + "colour = 1\n"))
