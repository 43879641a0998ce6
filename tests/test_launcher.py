"""run_cluster.py's pure parts: arguments, the effective config, peer commands, the event
feed derived from successive /cluster snapshots, and the k/r/q command line.

No network and no sleeps; the few process tests start `python -c` stand-ins, not peers.
"""

from __future__ import annotations

import importlib.util
import os
import stat
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from rich.console import Console

from peer.config import ClusterConfig, ConfigError, NodeAddress, load_config
from peer.ops import launcher as launcher_module
from peer.ops.dashboard import api_url, heartbeat_age, queue_table, schedule_table, usage_lines
from peer.ops.events import EventFeed, agreed_leadership
from peer.ops.keys import Command, LineEditor, parse_command
from peer.ops.launcher import (
    PROJECT_ROOT,
    Launcher,
    describe_exit,
    effective_config,
    peer_command,
    peer_env,
    write_config,
)

ROOT = Path(__file__).resolve().parent.parent


def load_run_cluster() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_cluster", ROOT / "run_cluster.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def three_nodes(secret: str = "", data_dir: str = "data") -> ClusterConfig:
    nodes = tuple(NodeAddress(i, "127.0.0.1", 7000 + i) for i in (1, 2, 3))
    return ClusterConfig(nodes=nodes, secret=secret, data_dir=data_dir)


def view(node_id: int, role: str = "follower", term: int = 1, leader: int | None = 3) -> Any:
    return {"id": node_id, "pid": 100 + node_id, "role": role, "term": term, "leader": leader}


def settled(term: int = 1, leader: int = 3) -> dict[int, Any]:
    return {i: view(i, "leader" if i == leader else "follower", term, leader) for i in (1, 2, 3)}


# --- arguments ------------------------------------------------------------------------


def test_arguments_default_to_five_nodes_and_the_cluster_toml_beside_the_script() -> None:
    args = load_run_cluster().parse_args([])
    assert args.nodes == 5
    assert args.config == ROOT / "cluster.toml"
    assert (args.base_port, args.data_dir, args.headless) == (None, None, False)


def test_arguments_are_all_read() -> None:
    argv = ["--nodes", "7", "--config", "x.toml", "--base-port", "9001", "--data-dir", "d"]
    args = load_run_cluster().parse_args([*argv, "--headless"])
    assert (args.nodes, args.config, args.base_port, args.data_dir, args.headless) == (
        7,
        Path("x.toml"),
        9001,
        "d",
        True,
    )


def test_an_invalid_node_count_exits_with_a_message_and_starts_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert load_run_cluster().main(["--nodes", "0"]) == 2
    assert "--nodes" in capsys.readouterr().err


# --- the effective config -------------------------------------------------------------


def test_an_empty_secret_is_replaced_by_a_generated_one(tmp_path: Path) -> None:
    config = effective_config(three_nodes(data_dir=str(tmp_path)), 3, make_secret=lambda: "s3")
    assert config.secret == "s3"


def test_the_default_secret_generator_gives_32_hex_characters(tmp_path: Path) -> None:
    first = effective_config(three_nodes(data_dir=str(tmp_path)), 3).secret
    second = effective_config(three_nodes(data_dir=str(tmp_path)), 3).secret
    assert len(first) == 32 and int(first, 16) >= 0 and first != second


def test_a_configured_secret_is_kept(tmp_path: Path) -> None:
    config = three_nodes(secret="mine", data_dir=str(tmp_path))
    assert effective_config(config, 3, make_secret=lambda: "other").secret == "mine"


def test_data_dir_option_overrides_the_file_and_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = effective_config(three_nodes(data_dir="from-file"), 3, data_dir="elsewhere")
    assert config.data_dir == str(tmp_path / "elsewhere")


def test_a_relative_data_dir_of_the_file_is_resolved_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert effective_config(three_nodes(data_dir="data"), 3).data_dir == str(tmp_path / "data")


def test_base_port_puts_node_i_on_base_plus_i_minus_one(tmp_path: Path) -> None:
    config = effective_config(three_nodes(data_dir=str(tmp_path)), 4, base_port=9100)
    assert [(n.id, n.port) for n in config.nodes] == [(1, 9100), (2, 9101), (3, 9102), (4, 9103)]


def test_more_nodes_than_the_file_continue_on_following_ports(tmp_path: Path) -> None:
    config = effective_config(three_nodes(data_dir=str(tmp_path)), 5)
    assert [n.port for n in config.nodes] == [7001, 7002, 7003, 7004, 7005]


def test_fewer_nodes_than_the_file_keep_the_first_ones(tmp_path: Path) -> None:
    config = effective_config(three_nodes(data_dir=str(tmp_path)), 2)
    assert config.ids == (1, 2)


@pytest.mark.parametrize(("nodes", "base_port"), [(0, None), (3, 0), (3, 65534)])
def test_impossible_node_counts_and_ports_are_refused(nodes: int, base_port: int | None) -> None:
    with pytest.raises(ConfigError):
        effective_config(three_nodes(), nodes, base_port=base_port)


def test_the_effective_config_is_written_to_data_dir_and_reads_back_equal(
    tmp_path: Path,
) -> None:
    config = effective_config(three_nodes(data_dir=str(tmp_path / "run")), 3)
    path = write_config(config)
    assert path == tmp_path / "run" / "cluster.toml"
    assert load_config(path) == config


def test_the_written_config_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    path = write_config(effective_config(three_nodes(data_dir=str(tmp_path)), 3))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- starting peers -------------------------------------------------------------------


def test_a_peer_is_started_as_python_m_peer_serve_with_its_id(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    assert peer_command(path, 4) == [
        sys.executable,
        *("-m", "peer", "serve", "--config", str(path), "--id", "4"),
    ]


def test_peers_can_import_this_project_from_any_directory() -> None:
    env = peer_env({"PYTHONPATH": "/somewhere", "HOME": "/h"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(PROJECT_ROOT), "/somewhere"]
    assert env["HOME"] == "/h" and env["PYTHONUNBUFFERED"] == "1"


@pytest.mark.parametrize(("code", "shown"), [(None, "running"), (-9, "killed"), (3, "exited(3)")])
def test_process_status_says_running_killed_or_exited_with_code(
    code: int | None, shown: str
) -> None:
    assert describe_exit(code) == shown


@pytest.fixture
def stand_in_launcher(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A Launcher whose peers are `python -c` stand-ins: node 1 waits, node 2 exits 3."""
    scripts = {1: "import sys; sys.stdin.read()", 2: "raise SystemExit(3)"}
    monkeypatch.setattr(
        launcher_module, "peer_command", lambda _path, n: [sys.executable, "-c", scripts[n]]
    )
    config = effective_config(three_nodes(data_dir=str(tmp_path)), 2)
    launcher = Launcher(config, write_config(config))
    yield launcher
    launcher.stop_all(grace=0.0)


def test_stop_all_ends_every_peer_and_appends_a_start_marker_to_its_log(
    stand_in_launcher: Launcher, tmp_path: Path
) -> None:
    stand_in_launcher.start(1)
    assert stand_in_launcher.is_running(1)
    stand_in_launcher.stop_all()
    assert not stand_in_launcher.is_running(1)
    assert "starting peer 1" in (tmp_path / "node-1.log").read_text()


def test_a_killed_peer_shows_killed_and_is_not_reported_as_exiting_by_itself(
    stand_in_launcher: Launcher,
) -> None:
    pid = stand_in_launcher.start(1)
    assert stand_in_launcher.kill(1) == pid
    assert stand_in_launcher.status(1) == "killed"
    assert stand_in_launcher.reap() == []
    assert stand_in_launcher.kill(1) is None


def test_a_peer_that_exits_by_itself_is_reported_once_with_its_code(
    stand_in_launcher: Launcher,
) -> None:
    stand_in_launcher.start(2)
    stand_in_launcher._peers[2].popen.wait()
    assert stand_in_launcher.reap() == [(2, 3)]
    assert stand_in_launcher.reap() == []
    assert stand_in_launcher.status(2) == "exited(3)"


def test_restart_replaces_the_process_with_a_new_one(stand_in_launcher: Launcher) -> None:
    first = stand_in_launcher.start(1)
    second = stand_in_launcher.restart(1)
    assert second != first and stand_in_launcher.pid(1) == second
    assert stand_in_launcher.is_running(1)


# --- the event feed -------------------------------------------------------------------


def test_a_peer_answering_for_the_first_time_is_up() -> None:
    feed = EventFeed()
    assert feed.update({1: None, 2: None, 3: None}, 0.0) == []
    assert feed.update({1: view(1), 2: None, 3: None}, 1.0)[0] == "peer 1 is up"


def test_a_peer_that_stops_answering_is_stopped_once() -> None:
    feed = EventFeed()
    feed.update(settled(), 0.0)
    assert feed.update({**settled(), 2: None}, 1.0) == ["peer 2 stopped"]
    assert feed.update({**settled(), 2: None}, 2.0) == []


def test_a_stopped_peer_that_answers_again_is_back() -> None:
    feed = EventFeed()
    feed.update(settled(), 0.0)
    feed.update({**settled(), 2: None}, 1.0)
    assert feed.update(settled(), 2.0) == ["peer 2 is back"]


def test_a_new_pid_between_two_polls_is_a_restart() -> None:
    feed = EventFeed()
    feed.update(settled(), 0.0)
    assert feed.update({**settled(), 2: {**view(2), "pid": 999}}, 1.0) == ["peer 2 restarted"]


def test_a_candidate_in_a_new_term_starts_an_election_announced_once() -> None:
    feed = EventFeed()
    feed.update(settled(term=1), 0.0)
    electing = {1: view(1, term=1), 2: view(2, "candidate", 2, None), 3: None}
    assert feed.update(electing, 1.0) == ["peer 3 stopped", "election: term 2 started by 2"]
    assert "election: term 2 started by 2" not in feed.update(electing, 2.0)


def test_a_leader_and_term_agreed_by_a_majority_of_reachable_peers_leads() -> None:
    feed = EventFeed()
    assert feed.update(settled(term=4, leader=3), 0.0)[-1] == "peer 3 leads, term 4"


def test_the_same_leadership_is_not_announced_again() -> None:
    feed = EventFeed()
    feed.update(settled(), 0.0)
    assert feed.update(settled(), 1.0) == []


def test_a_new_term_with_the_same_leader_is_announced() -> None:
    feed = EventFeed()
    feed.update(settled(term=1), 0.0)
    assert feed.update(settled(term=2), 1.0) == ["peer 3 leads, term 2"]


def test_peers_that_disagree_about_the_leader_announce_nothing_until_they_settle() -> None:
    feed = EventFeed()
    feed.update(settled(term=1, leader=3), 0.0)
    split = {1: view(1, term=1, leader=3), 2: view(2, term=2, leader=2), 3: None}
    assert feed.update(split, 1.0) == ["peer 3 stopped"]
    agreed = {1: view(1, term=2, leader=2), 2: view(2, "leader", 2, 2), 3: None}
    assert feed.update(agreed, 2.0) == ["peer 2 leads, term 2"]


def test_reachable_peers_that_all_report_none_mean_no_leader() -> None:
    feed = EventFeed()
    feed.update(settled(), 0.0)
    alone = {1: view(1, leader=None), 2: None, 3: None}
    assert feed.update(alone, 1.0) == ["peer 2 stopped", "peer 3 stopped", "no leader"]


def test_unreachable_peers_do_not_count_against_agreement() -> None:
    snapshots = {1: view(1, term=5, leader=2), 2: view(2, "leader", 5, 2), 3: None}
    assert agreed_leadership(snapshots) == (2, 5)


def test_a_leader_reported_by_half_the_reachable_peers_is_not_agreed() -> None:
    snapshots = {1: view(1, term=5, leader=2), 2: view(2, term=5, leader=None), 3: None}
    assert agreed_leadership(snapshots) is None


def test_the_feed_keeps_the_last_twelve_events_with_their_times() -> None:
    feed = EventFeed()
    for i in range(20):
        feed.note(float(i), f"event {i}")
    assert [(e.at, e.text) for e in feed.recent][0] == (8.0, "event 8")
    assert len(feed.recent) == 12


def test_every_event_is_passed_to_the_listener_for_headless_output() -> None:
    heard: list[str] = []
    feed = EventFeed(on_event=lambda event: heard.append(event.text))
    feed.update(settled(), 0.0)
    assert heard == ["peer 1 is up", "peer 2 is up", "peer 3 is up", "peer 3 leads, term 1"]


# --- what the screen says -------------------------------------------------------------


def test_the_api_url_is_the_leaders_or_else_node_ones() -> None:
    config = three_nodes()
    assert api_url(config, settled(leader=2)) == "http://127.0.0.1:7002"
    assert api_url(config, {1: None, 2: None, 3: None}) == "http://127.0.0.1:7001"


def test_the_usage_lines_give_a_submit_command_and_a_status_command_for_the_url() -> None:
    text = "\n".join(usage_lines("http://127.0.0.1:7001"))
    assert (
        "curl -s -X POST http://127.0.0.1:7001/tasks -H 'content-type: application/json' "
        """-d '{"kind":"echo","args":{"hello":"world"}}'"""
    ) in text
    assert "python -m peer status --peer http://127.0.0.1:7001" in text


@pytest.mark.parametrize(("raw", "now", "age"), [(120, None, 120), (1.7e12, 1.7e9 + 0.25, 250)])
def test_heartbeat_age_accepts_an_age_or_a_wall_clock_time_in_ms(
    raw: float, now: float | None, age: int
) -> None:
    assert heartbeat_age(raw, now) == age


def test_a_missing_heartbeat_has_no_age() -> None:
    assert heartbeat_age(None) is None


# --- commands -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("k 3", Command("kill", 3)),
        ("kill 12", Command("kill", 12)),
        ("r3", Command("restart", 3)),
        (" restart 2 ", Command("restart", 2)),
        ("q", Command("quit")),
    ],
)
def test_k_r_and_q_commands_are_understood(line: str, command: Command) -> None:
    assert parse_command(line) == command


@pytest.mark.parametrize("line", ["", "k", "k x", "x 3", "k 3 4"])
def test_anything_else_is_not_a_command(line: str) -> None:
    assert parse_command(line) is None


def test_typed_keys_become_a_line_on_enter_and_backspace_erases() -> None:
    editor = LineEditor(instant_quit=True)
    assert editor.feed("k 34\x7f") == []
    assert editor.pending == "k 3"
    assert editor.feed("\r") == ["k 3"]
    assert editor.pending == ""


def test_q_on_an_empty_line_quits_at_once_in_key_mode_only() -> None:
    assert LineEditor(instant_quit=True).feed("q") == ["q"]
    assert LineEditor(instant_quit=False).feed("q") == []
    assert LineEditor(instant_quit=False).feed("q\n") == ["q"]


def test_a_pasted_chunk_of_lines_gives_every_line() -> None:
    assert LineEditor(instant_quit=False).feed("k 1\nr 1\n") == ["k 1", "r 1"]


def test_the_dashboard_shows_queues_and_schedules_as_the_leader_sees_them() -> None:
    leader_view = {
        "leader": 2,
        "term": 4,
        "queues": {"default": {"queued": 7, "scheduled": 1, "running": 3}},
        "schedules": [
            {
                "name": "hello",
                "every": 5.0,
                "cron": None,
                "paused": False,
                "fired": 12,
                "next_due": 1_767_225_605.0,
                "last_due": 1_767_225_600.0,
            },
        ],
    }
    snapshots = {1: {"leader": 2, "term": 4}, 2: leader_view, 3: None}
    console = Console(width=120, record=True)
    for table in (queue_table(snapshots), schedule_table(snapshots)):
        assert table is not None
        console.print(table)
    text = console.export_text()
    assert "default" in text and " 7 " in text and " 3" in text
    assert "hello" in text and "every 5s" in text and "12" in text
    assert queue_table({1: {"leader": 1, "term": 1}}) is None  # nothing to show: no panel
