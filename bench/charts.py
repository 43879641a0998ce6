"""The PNG charts of the benchmark report: one per distribution or curve.

Each function takes `matplotlib.pyplot` (imported by bench/report.py only when the
`bench` extra is installed, so this module imports no matplotlib itself) and the parts of
a bench/run.py result, and returns a figure, or None when its part was not measured.
Owns the look of the charts only; bench/report.py saves and links them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Figure = Any
SMALL = (6.4, 3.6)  # inches
TARGET = {"color": "tab:red", "linestyle": "--", "linewidth": 1}


def _ok(parts: dict[str, Any], name: str) -> dict[str, Any] | None:
    part = parts.get(name)
    return None if part is None or "error" in part else part


def _bins(*samples: list[float], count: int = 40) -> list[float]:
    """Shared bin edges, so histograms drawn over each other compare bar by bar."""
    values = [v for s in samples for v in s]
    low, high = min(values), max(values)
    step = (high - low) / count or 1.0
    return [low + i * step for i in range(count + 1)]


def failover(plt: Any, parts: dict[str, Any]) -> Figure | None:
    part = _ok(parts, "failover")
    if part is None:
        return None
    samples = part["samples"]
    kills = [s["kill"] for s in samples]
    fig, ax = plt.subplots(figsize=SMALL)
    ax.plot(kills, [s["failover_s"] * 1000 for s in samples], "o-", label="agreed ready leader")
    writes = [(s["kill"], s["write_accepted_s"] * 1000) for s in samples if s["write_accepted_s"]]
    if writes:
        ax.plot(*zip(*writes, strict=True), "s--", label="write accepted")
    ax.axhline(part["failover"]["median_s"] * 1000, color="gray", linewidth=1, label="median")
    ax.axhline(1000, **TARGET, label="target median 1 s")
    ax.set(xlabel="kill", ylabel="ms after SIGKILL", title=f"Failover, {part['nodes']} peers")
    ax.set_xticks(kills)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    return fig


def latency(plt: Any, parts: dict[str, Any]) -> Figure | None:
    part = _ok(parts, "latency")
    if part is None:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.6, 3.6))
    submits = {
        label: part[key]["samples_ms"]
        for key, label in (
            ("latency_leader", "to the leader"),
            ("latency_follower", "to a follower"),
        )
        if key in part
    }
    for label, samples in submits.items():
        left.hist(samples, bins=_bins(*submits.values()), alpha=0.6, label=label)
    left.set(xlabel="ms", ylabel="requests", title="Submit (acknowledged)")
    left.legend(fontsize="small")
    done = part.get("done_leader")
    if done:
        bins = _bins(done["submit_samples_ms"], done["done_samples_ms"])
        right.hist(done["submit_samples_ms"], bins=bins, alpha=0.6, label="submit")
        right.hist(done["done_samples_ms"], bins=bins, alpha=0.6, label="submit to done")
        right.legend(fontsize="small")
    right.set(xlabel="ms", ylabel="tasks", title="Echo task, submit to succeeded")
    return fig


def e2e(plt: Any, parts: dict[str, Any]) -> Figure | None:
    part = _ok(parts, "e2e")
    if part is None or not part.get("timeline"):
        return None
    t, done, queue = zip(*part["timeline"], strict=True)
    fig, ax = plt.subplots(figsize=SMALL)
    ax.plot(t, done, label="succeeded")
    ax.plot(t, queue, label="queued + scheduled")
    ax.set(
        xlabel="s after the first submit",
        ylabel="tasks",
        title=f"End to end, {part['tasks']:,} echo tasks: {part['per_second']:,.0f}/s",
    )
    ax.legend(fontsize="small")
    return fig


def _scale(
    plt: Any,
    parts: dict[str, Any],
    title: str,
    ylabel: str,
    series: dict[str, Callable[..., Any]],
    target: tuple[float, str] | None = None,
) -> tuple[Figure, Any] | None:
    part = _ok(parts, "scale")
    if part is None or not part["points"]:
        return None
    points = part["points"]
    nodes = [p["nodes"] for p in points]
    fig, ax = plt.subplots(figsize=SMALL)
    for label, value in series.items():
        ax.plot(nodes, [value(p) for p in points], "o-", label=label)
    ax.set(xlabel="peers", ylabel=ylabel, title=title, xticks=nodes)
    ax.set_ylim(bottom=0)
    if target is not None:
        ax.axhline(target[0], **TARGET, label=target[1])
        ax.legend(fontsize="small")
    return fig, ax


def _scale_figure(*args: Any, **kwargs: Any) -> Figure | None:
    """A scale chart with nothing drawn on top of it."""
    drawn = _scale(*args, **kwargs)
    return None if drawn is None else drawn[0]


def scale_failover(plt: Any, parts: dict[str, Any]) -> Figure | None:
    drawn = _scale(
        plt,
        parts,
        "Failover by cluster size",
        "ms after SIGKILL",
        {"median": lambda p: p["failover"]["median_s"] * 1000 if p["failover"] else None},
    )
    if drawn is None:
        return None
    fig, ax = drawn
    for p in parts["scale"]["points"]:
        ys = [s["failover_s"] * 1000 for s in p["failover_samples"]]
        ax.scatter([p["nodes"]] * len(ys), ys, color="gray", s=12, label=None)
    ax.axhline(1000, **TARGET, label="target median 1 s")
    ax.legend(fontsize="small")
    return fig


def scale_throughput(plt: Any, parts: dict[str, Any]) -> Figure | None:
    return _scale_figure(
        plt,
        parts,
        "End-to-end throughput by cluster size",
        "echo tasks/s",
        {"first submit to last succeeded": lambda p: p["throughput"]["per_second"]},
        target=(1500, "target 1,500/s (5 peers)"),
    )


def scale_cpu(plt: Any, parts: dict[str, Any]) -> Figure | None:
    return _scale_figure(
        plt,
        parts,
        "Idle CPU per peer",
        "% of one core",
        {
            "mean peer": lambda p: p["idle"]["cpu_pct_mean"],
            "busiest peer": lambda p: p["idle"]["cpu_pct_max"],
        },
        target=(2, "target 2% (5 peers)"),
    )


def scale_rss(plt: Any, parts: dict[str, Any]) -> Figure | None:
    return _scale_figure(
        plt,
        parts,
        "Resident memory per peer (largest peer)",
        "MiB",
        {
            "idle": lambda p: p["rss_mib_idle_max"],
            "after the end-to-end load": lambda p: p["rss_mib_after_load_max"],
        },
        target=(80, "target 80 MiB (5 peers)"),
    )


def loss(plt: Any, parts: dict[str, Any]) -> Figure | None:
    part = _ok(parts, "loss")
    if part is None or not part["samples"]:
        return None
    fig, ax = plt.subplots(figsize=SMALL)
    labels = []
    for x, variant in enumerate(("full", "spare")):
        chosen = [s for s in part["samples"] if s["variant"] == variant]
        for offset, key, color in (
            (-0.1, "failed_s", "tab:blue"),
            (0.1, "rerunning_s", "tab:orange"),
        ):
            ys = [s[key] * 1000 for s in chosen]
            name = "attempts failed" if key == "failed_s" else "running elsewhere"
            label = name if x == 0 else None
            ax.scatter([x + offset] * len(ys), ys, color=color, s=16, label=label)
        labels.append("every slot busy" if variant == "full" else "spare slots")
    ax.set(
        xticks=[0, 1],
        xlim=(-0.5, 1.5),
        xticklabels=labels,
        ylabel="ms after SIGKILL",
        title=f"Worker loss ({part['sleep_s']:g} s tasks)",
    )
    ax.set_ylim(bottom=0)
    ax.legend(fontsize="small")
    return fig


CHARTS: dict[str, Callable[[Any, dict[str, Any]], Figure | None]] = {
    "failover": failover,
    "latency": latency,
    "e2e": e2e,
    "scale-failover": scale_failover,
    "scale-throughput": scale_throughput,
    "scale-cpu": scale_cpu,
    "scale-rss": scale_rss,
    "loss": loss,
}
