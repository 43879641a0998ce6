"""Render a bench/run.py result: the targets met or missed, tables, and PNG charts.

    python bench/report.py bench/results/<date>.json [--report bench/REPORT.md]

Owns presentation only: it reads the result dict (as bench/run.py builds it or as its
JSON file holds it) and never starts a cluster. Charts need matplotlib (the `bench`
extra); without it the report says so and is written without them. Each chart is a PNG
next to the JSON file, named after it, and linked from the report by a relative path.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Parts = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Target:
    """A figure from issue 5 and the bound it must keep."""

    label: str
    limit: float
    unit: str
    at_most: bool  # True: the figure must be <= limit; False: >= limit
    figure: Callable[[Parts], float | None]


def _scale_at(parts: Parts, size: int) -> dict[str, Any] | None:
    points = parts.get("scale", {}).get("points", [])
    return next((p for p in points if p["nodes"] == size), None)


def _idle_cpu(key: str) -> Callable[[Parts], float | None]:
    def figure(parts: Parts) -> float | None:
        point = _scale_at(parts, 5)
        return None if point is None else float(point["idle"][key])

    return figure


def _rss(parts: Parts) -> float | None:
    point = _scale_at(parts, 5)
    return (
        None if point is None else max(point["rss_mib_idle_max"], point["rss_mib_after_load_max"])
    )


def _get(part: str, *keys: str) -> Callable[[Parts], float | None]:
    def figure(parts: Parts) -> float | None:
        value: Any = parts.get(part)
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    return figure


def _single(parts: Parts) -> float | None:
    submit = parts.get("submit", {})
    rates = [submit[k]["per_second"] for k in ("single_leader", "single_random") if k in submit]
    return max(rates) if rates else None


TARGETS = (
    Target(
        "idle CPU per peer at 5 peers (mean)", 2.0, "% of a core", True, _idle_cpu("cpu_pct_mean")
    ),
    Target(
        "idle CPU per peer at 5 peers (busiest: the leader)",
        2.0,
        "% of a core",
        True,
        _idle_cpu("cpu_pct_max"),
    ),
    Target("RSS per peer at 5 peers (largest, idle or after load)", 80.0, "MiB", True, _rss),
    Target("failover median", 1.0, "s", True, _get("failover", "failover", "median_s")),
    Target(
        "single-task submits, 32 clients (best of leader / all peers)", 2000, "/s", False, _single
    ),
    Target("`/tasks/batch` submits", 20000, "/s", False, _get("submit", "batch", "per_second")),
    Target("end to end, echo tasks", 1500, "/s", False, _get("e2e", "per_second")),
)


def evaluate(parts: Parts) -> list[dict[str, Any]]:
    """Each target with its figure and `met`, `missed` or `not measured`."""
    out = []
    for t in TARGETS:
        value = t.figure(parts)
        status = "not measured"
        if value is not None:
            status = "met" if (value <= t.limit if t.at_most else value >= t.limit) else "missed"
        bound = f"{'<=' if t.at_most else '>='} {t.limit:g} {t.unit}"
        out.append({"target": t.label, "bound": bound, "value": value, "status": status})
    return out


# ----------------------------------------------------------------------- charts


def draw_charts(result: dict[str, Any], out_dir: Path, stem: str) -> dict[str, str] | str:
    """Chart name -> PNG file name, or why no chart was drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (`pip install -e '.[bench]'`): no charts"
    import charts

    drawn = {}
    for name, draw in charts.CHARTS.items():
        fig = draw(plt, result["parts"])
        if fig is None:
            continue
        path = out_dir / f"{stem}-{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        drawn[name] = path.name
    return drawn


# --------------------------------------------------------------------- markdown


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.0f} ms"


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows] + [""]


def _chart(charts: dict[str, str] | str, name: str, rel: str) -> list[str]:
    if isinstance(charts, dict) and name in charts:
        return [f"![{name}]({rel}/{charts[name]})", ""]
    return []


def header(result: dict[str, Any]) -> list[str]:
    m = result["machine"]
    cpus = m["cpus_usable"]
    load = max(result["loadavg_start"][0], result["loadavg_end"][0])
    lines = [
        "# Benchmark report",
        "",
        f"`{result['command']}`, started {result['started']}, took {result['seconds']:.0f} s"
        f"{' (quick: small sizes, read the figures as rough)' if result['quick'] else ''}.",
        "",
        f"Machine: {m['cpu_model']}, {cpus} usable CPUs of {m['cpu_count']}, "
        f"{m['memory_mib']:,} MiB; {m['platform']}; Python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["packages"].items())
        + f"; tree {m['git']}.",
        f"Load average {result['loadavg_start'][0]:.1f} at the start, "
        f"{result['loadavg_end'][0]:.1f} at the end.",
        "",
    ]
    if load > cpus:
        lines += [
            f"**The machine was busy** (load average above its {cpus} CPUs): other jobs took "
            "CPU from the peers, so throughput is lower and latencies longer than on an idle "
            "machine.",
            "",
        ]
    return lines


def targets_section(result: dict[str, Any]) -> list[str]:
    rows = []
    for t in result["targets"]:
        mark = {"met": "met", "missed": "**missed**"}.get(t["status"], t["status"])
        value = t["value"]
        rows.append([t["target"], t["bound"], "-" if value is None else f"{value:,.2f}", mark])
    lines = ["## Targets (issue 5)", ""] + _table(["figure", "target", "measured", ""], rows)
    if any(t["status"] == "missed" for t in result["targets"]):
        lines += ["A missed figure: see [where the time goes](#where-the-time-goes).", ""]
    return lines


def where_the_time_goes(result: dict[str, Any]) -> list[str]:
    """CPU bookkeeping of this run, the idle profile, and the profile under load."""
    parts = result["parts"]
    lines = ["## Where the time goes", ""]
    for name, part in (("submit", parts.get("submit", {})), ("end to end", parts.get("e2e", {}))):
        if "peer_cpu_seconds" not in part:
            continue
        wall = part.get("seconds") or sum(
            part[k]["seconds"] for k in ("single_random", "single_leader", "batch") if k in part
        )
        lines.append(
            f"- {name}: the peers used {part['peer_cpu_seconds'] / wall:.2f} CPU-seconds per "
            f"second of load (of {result['machine']['cpus_usable']} CPUs), the client process "
            f"{part['client_cpu_seconds'] / wall:.2f}."
        )
    lines += [
        "- Under load the leader is CPU-bound on the HTTP layer: py-spy under the 32-client "
        "load puts over half of its samples in aiohttp request handling and socket writes and "
        "under a fifth in the task machine and replication (README, Performance). To profile "
        "it again: `py-spy record --pid <leader pid> -d 10 -o leader.svg` while "
        "`python bench/submit.py` runs.",
        "- At idle a follower sends and receives one frame per heartbeat (its append reply "
        "carries its gossip, the leader's heartbeat carries everyone's) and wakes about ten "
        "times a second; the leader exchanges a frame each way with every follower per "
        "heartbeat (80 frames a second at 5 peers). The WebSocket I/O of those frames "
        "(aiohttp's frame writer and reader, signing, event-loop wake-ups) is most of what "
        "an idle leader spends, which is why it costs about twice a follower and more with "
        "more followers (scale table).",
        "",
    ]
    profile = parts.get("profile")
    if profile and "error" not in profile:
        lines += profile_section(profile)
    return lines


def profile_section(part: dict[str, Any]) -> list[str]:
    areas = ", ".join(f"{name} {pct:.0f}%" for name, pct in part["by_area_pct"].items())
    lines = [
        f"Idle leader (peer {part['peer']} of {part['nodes']}), cProfile with a CPU-time timer "
        f"over {part['seconds']:.0f} s: {part['cpu_pct']:.1f}% of a core under the profiler "
        f"(which slows it: read the shares). By area: {areas}.",
        "",
    ]
    header = ["function", "calls", "own %", "cumulative %"]
    for title, key in (
        ("Most own time", "top"),
        ("This project, cumulative", "project_cumulative"),
    ):
        rows = [
            [f"`{r['function']}`", f"{r['calls']:,}", f"{r['own_pct']:.1f}"]
            + [f"{r['cumulative_pct']:.1f}"]
            for r in part.get(key, [])[:10]
        ]
        lines += [f"{title}:", ""] + _table(header, rows)
    return lines


def failover_section(part: dict[str, Any], charts: Any, rel: str) -> list[str]:
    f, w = part["failover"], part["write_accepted"] or {}
    rows = [
        ["survivors agree on a ready leader", _ms(f["median_s"]), _ms(f["p90_s"]), _ms(f["max_s"])],
        ["a write is accepted", _ms(w.get("median_s")), _ms(w.get("p90_s")), _ms(w.get("max_s"))],
    ]
    lines = [
        f"## Failover: SIGKILL the leader of {part['nodes']} peers, {len(part['samples'])}x",
        "",
    ]
    lines += _table(["from the kill until", "median", "p90", "max"], rows)
    return lines + _chart(charts, "failover", rel)


def submit_section(part: dict[str, Any]) -> list[str]:
    rows = [
        [label, _num(part[key]["per_second"]), _num(part[key]["tasks"])]
        for key, label in (
            ("single_leader", "single-task, 32 clients, to the leader"),
            ("single_random", "single-task, 32 clients, to random peers"),
            ("batch", "`/tasks/batch` of 1000, 4 clients, to random peers"),
        )
        if key in part
    ]
    lines = [f"## Submit throughput ({part['nodes']} peers, acknowledged tasks)", ""]
    lines += _table(["load", "tasks/s", "tasks"], rows)
    return lines + [
        f"CPU seconds: peers {part['peer_cpu_seconds']:.1f}, client process "
        f"{part['client_cpu_seconds']:.1f}.",
        "",
    ]


def latency_section(part: dict[str, Any], charts: Any, rel: str) -> list[str]:
    done = part.get("done_leader", {})
    rows = [
        [label, _num(figures[p50], 1), _num(figures[p99], 1)]
        for label, figures, p50, p99 in (
            ("submit to the leader", part.get("latency_leader"), "p50_ms", "p99_ms"),
            ("submit to a follower", part.get("latency_follower"), "p50_ms", "p99_ms"),
            ("submit (echo, to the leader)", done, "submit_p50_ms", "submit_p99_ms"),
            ("submit to done (echo)", done, "done_p50_ms", "done_p99_ms"),
        )
        if figures
    ]
    lines = ["## Latency: one client, one task at a time", ""]
    lines += _table(["request", "p50 ms", "p99 ms"], rows)
    return lines + _chart(charts, "latency", rel)


def e2e_section(part: dict[str, Any], charts: Any, rel: str) -> list[str]:
    rows = [
        ["first submit to last succeeded", f"{part['seconds']:.2f} s", _num(part["per_second"])],
        [
            "first submit to last acknowledged",
            f"{part['submit_seconds']:.2f} s",
            _num(part["submit_per_second"]),
        ],
    ]
    lines = [f"## End to end: {part['tasks']:,} echo tasks on {part['nodes']} peers", ""]
    lines += _table(["span", "time", "tasks/s"], rows)
    lines += [
        f"Batches of {part['batch']} from {part['posters']} posters; peak queue "
        f"{part['peak_queue']:,}; CPU seconds: peers {part['peer_cpu_seconds']:.1f}, client "
        f"{part['client_cpu_seconds']:.1f}.",
        "",
    ]
    return lines + _chart(charts, "e2e", rel)


SCALE_HEADER = [
    "peers",
    "failover median",
    "end to end tasks/s",
    "idle CPU, % of a core (mean / max peer)",
    "RSS MiB (idle / after load)",
]


def scale_section(part: dict[str, Any], charts: Any, rel: str) -> list[str]:
    rows = [
        [
            str(p["nodes"]),
            _ms(p["failover"]["median_s"] if p["failover"] else None),
            _num(p["throughput"]["per_second"]),
            f"{p['idle']['cpu_pct_mean']:.1f} / {p['idle']['cpu_pct_max']:.1f}",
            f"{p['rss_mib_idle_max']:.0f} / {p['rss_mib_after_load_max']:.0f}",
        ]
        for p in part["points"]
    ]
    idle = part["points"][0]["idle"]["seconds"] if part["points"] else 0
    lines = ["## Scale", ""] + _table(SCALE_HEADER, rows)
    lines += [f"Idle CPU over {idle:.0f} s with no requests; RSS of the largest peer.", ""]
    for name in ("scale-failover", "scale-throughput", "scale-cpu", "scale-rss"):
        lines += _chart(charts, name, rel)
    return lines


def loss_section(part: dict[str, Any], charts: Any, rel: str) -> list[str]:
    rows = [
        [label]
        + [
            _ms(part[variant][key][stat])
            for key in ("failed_s", "rerunning_s")
            for stat in ("median_s", "max_s")
        ]
        for variant, label in (("full", "every slot busy"), ("spare", "spare slots"))
        if variant in part
    ]
    header = ["variant", "attempts failed, median", "max", "running elsewhere, median", "max"]
    lines = [f"## Worker loss: SIGKILL a busy worker ({part['nodes']} peers)", ""]
    lines += _table(header, rows)
    lines += [f"Each task sleeps {part['sleep_s']:g} s.", ""]
    return lines + _chart(charts, "loss", rel)


SECTIONS: dict[str, Callable[..., list[str]]] = {
    "failover": failover_section,
    "submit": lambda part, charts, rel: submit_section(part),
    "latency": latency_section,
    "e2e": e2e_section,
    "scale": scale_section,
    "loss": loss_section,
    "profile": lambda part, charts, rel: [],  # in "where the time goes"
}


COMPARED = (  # figure, this cluster's (part.keys), Huey's (keys), 1 if lower is better
    ("one client: submit p50, ms", "latency.latency_leader.p50_ms", "latency.enqueue_p50_ms", 1),
    ("one client: submit p99, ms", "latency.latency_leader.p99_ms", "latency.enqueue_p99_ms", 1),
    ("one client: to result p50, ms", "latency.done_leader.done_p50_ms", "latency.done_p50_ms", 1),
    ("32 clients, to the leader, /s", "submit.single_leader.per_second", "enqueue.per_second", 0),
    ("32 clients, spread, /s", "submit.single_random.per_second", "enqueue.per_second", 0),
    ("end to end, echo tasks, /s", "e2e.per_second", "e2e.per_second", 0),
)


def compare_section(parts: Parts) -> list[str]:
    """The cluster's figures of this run next to Huey on Redis's, as ratios."""
    huey = parts["compare"]
    if "skipped" in huey or "error" in huey:
        return ["## Against Huey on Redis", "", f"Not measured: {huey.get('skipped')}.", ""]

    def at(part: str, *keys: str) -> float | None:
        value: Any = parts.get(part)
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, int | float) else None

    rows_spec = [  # (figure, this run's figure, Huey's, lower is better)
        (name, at(*ours.split(".")), at("compare", *theirs.split(".")), lower)
        for name, ours, theirs, lower in COMPARED
    ]
    rows = []
    for name, ours, theirs, lower in rows_spec:
        if ours is None or theirs is None or not theirs:
            ratio = "—"
        else:
            ratio = f"{ours / theirs:.2f}x" + (" (lower is better)" if lower else "")
        rows.append([name, _num(ours, 1), _num(theirs, 1), ratio])
    lines = ["## Against Huey on Redis", ""]
    lines += _table(["figure", "this cluster", "Huey on Redis", "ratio"], rows)
    lines += [
        f"Huey {huey.get('version', '')} with {huey['workers']} worker threads on a "
        "redis-server with persistence off (nothing fsynced, nothing replicated); this "
        "cluster fsyncs every acknowledged write on a majority of its peers. Same machine, "
        "same run, loads of the same shape (Huey's client is its own, synchronous one; "
        "its end-to-end tasks are enqueued one by one, the cluster's in batches).",
        "",
    ]
    return lines


def render(result: dict[str, Any], charts: dict[str, str] | str, rel: str) -> str:
    lines = header(result) + targets_section(result)
    if isinstance(charts, str):
        lines += [f"Charts: {charts}.", ""]
    for name, section in SECTIONS.items():
        part = result["parts"].get(name)
        if part is None:
            continue
        if "error" in part:
            lines += [f"## {name}: FAILED", "", "```", part["error"][:1500], "```", ""]
            continue
        lines += section(part, charts, rel)
    if "compare" in result["parts"]:
        lines += compare_section(result["parts"])
    if "profile" in result["parts"] or any(t["status"] == "missed" for t in result["targets"]):
        lines += where_the_time_goes(result)
    config = ", ".join(f"{k} {v}" for k, v in result["config"].items())
    sizes = ", ".join(f"{k} {v}" for k, v in result["sizes"].items())
    lines += [
        "## Setup",
        "",
        f"Cluster timings and settings (`cluster.toml`): {config}.",
        f"Sizes: {sizes}.",
        "Every part starts its own cluster on free loopback ports; load comes from a client "
        "process separate from the peers. Every sample is in the JSON file.",
        "",
    ]
    return "\n".join(lines)


def write(result: dict[str, Any], json_path: Path, report_path: Path) -> None:
    """Evaluate the targets, draw the charts, write the JSON and the report."""
    result["targets"] = evaluate(result["parts"])
    json_path.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    charts = draw_charts(result, json_path.parent, json_path.stem)
    rel = os.path.relpath(json_path.parent, report_path.parent)
    report_path.write_text(render(result, charts, rel), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", help="a JSON file written by bench/run.py")
    parser.add_argument("--report", default=str(Path(__file__).parent / "REPORT.md"))
    args = parser.parse_args(argv)
    path = Path(args.results)
    write(json.loads(path.read_text(encoding="utf-8")), path, Path(args.report))
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
