"""A private network for peer processes: one network namespace per peer, joined by a
bridge, with nftables rules that cut, half-cut or thin out the links between them.

    with NetLab(5) as lab:            # namespaces bq<k>-1..5, addresses 10.X.Y.1..5
        lab.prefix(1)                 # ["ip", "netns", "exec", "bq<k>-1"]
        lab.cut({4, 5}, {1, 2, 3})    # both ways, between the two sides
        lab.cut_one_way(5, {1, 2, 3, 4})  # what 5 sends to them is dropped
        lab.loss(20)                  # every peer drops a fifth of what it sends
        lab.heal()

The bridge and its /24 live only on this machine (the test process reaches the peers
through the bridge's own address, .254); everything is removed on exit. `NetLab.why_not()`
says why such a lab cannot be made here (not root, no `ip netns`, no `nft`), for a skip.
Rules are nftables filters in each namespace (`ip daddr ... drop` on output,
`ip saddr ... drop` on input, `numgen random` for loss): this machine's kernel has no
netem.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterable

TABLE = "bq"


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=20)


def _must(*argv: str) -> None:
    done = _run(*argv)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")


class NetLab:
    def __init__(self, size: int) -> None:
        self.size = size
        self.tag = f"bq{os.getpid() % 10000}{random.randrange(100)}"
        self.subnet = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
        self.bridge = f"{self.tag}br"[:15]
        self.made: list[str] = []

    @staticmethod
    def why_not() -> str | None:
        """None when a lab can be made here, else why not."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        for tool in ("ip", "nft"):
            if shutil.which(tool) is None:
                return f"no `{tool}` on this machine (iproute2, nftables)"
        probe = f"bqprobe{os.getpid()}"
        made = _run("ip", "netns", "add", probe)
        if made.returncode != 0:
            return f"cannot make a network namespace: {made.stderr.strip()}"
        try:
            nft = _run("ip", "netns", "exec", probe, "nft", "add", "table", "inet", TABLE)
            if nft.returncode != 0:
                return f"nftables does not work in a namespace: {nft.stderr.strip()}"
        finally:
            _run("ip", "netns", "del", probe)
        return None

    def ns(self, peer: int) -> str:
        return f"{self.tag}-{peer}"

    def address(self, peer: int) -> str:
        return f"{self.subnet}.{peer}"

    def prefix(self, peer: int) -> list[str]:
        return ["ip", "netns", "exec", self.ns(peer)]

    def __enter__(self) -> NetLab:
        try:
            _must("ip", "link", "add", self.bridge, "type", "bridge")
            self.made.append("bridge")
            _must("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
            _must("ip", "link", "set", self.bridge, "up")
            for peer in range(1, self.size + 1):
                self._add_peer(peer)
        except BaseException:
            self.close()
            raise
        return self

    def _add_peer(self, peer: int) -> None:
        ns, veth = self.ns(peer), f"{self.tag}v{peer}"[:15]
        _must("ip", "netns", "add", ns)
        self.made.append(ns)
        _must("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        _must("ip", "link", "set", veth, "master", self.bridge, "up")
        _must("ip", "-n", ns, "addr", "add", f"{self.address(peer)}/24", "dev", "eth0")
        _must("ip", "-n", ns, "link", "set", "eth0", "up")
        _must("ip", "-n", ns, "link", "set", "lo", "up")
        self._nft(peer, "add", "table", "inet", TABLE)
        for chain, hook in (("out", "output"), ("in", "input")):
            spec = f"{{ type filter hook {hook} priority 0; }}"
            self._nft(peer, "add", "chain", "inet", TABLE, chain, spec)

    def _nft(self, peer: int, *argv: str) -> None:
        _must("ip", "netns", "exec", self.ns(peer), "nft", *argv)

    def _rule(self, peer: int, chain: str, *match: str) -> None:
        self._nft(peer, "add", "rule", "inet", TABLE, chain, *match)

    def cut(self, side: Iterable[int], other: Iterable[int]) -> None:
        """No packet crosses between the two sides, either way."""
        ours, theirs = list(side), list(other)
        for a in ours:
            for b in theirs:
                self.cut_one_way(a, [b])
                self.cut_one_way(b, [a])

    def cut_one_way(self, sender: int, receivers: Iterable[int]) -> None:
        """What `sender` sends to each receiver is dropped (on the way out); what they
        send to it still arrives."""
        for receiver in receivers:
            self._rule(sender, "out", "ip", "daddr", self.address(receiver), "drop")

    def loss(self, percent: int) -> None:
        """Every peer drops `percent` % of the packets it sends, at random."""
        for peer in range(1, self.size + 1):
            self._rule(peer, "out", "numgen", "random", "mod", "100", "<", str(percent), "drop")

    def heal(self) -> None:
        for peer in range(1, self.size + 1):
            for chain in ("out", "in"):
                self._nft(peer, "flush", "chain", "inet", TABLE, chain)

    def close(self) -> None:
        for name in reversed(self.made):
            if name == "bridge":
                _run("ip", "link", "del", self.bridge)
            else:
                _run("ip", "netns", "del", name)  # (its veth goes with it)
        self.made.clear()

    def __exit__(self, *exc: object) -> None:
        self.close()
