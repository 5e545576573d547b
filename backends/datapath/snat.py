"""Node-wide SNAT as upstream lays it out, applied with ``iptables-restore --noflush``.

nat table: ``POSTROUTING -j AWS-SNAT-CHAIN-0``; in the chain one RETURN per VPC CIDR, then
SNAT to the primary IP with ``--random-fully``. The chain is flushed and refilled on every
call and the jump is added only when ``iptables-save`` does not show it, so repeated calls
converge on one copy of every rule.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from backends.datapath.errors import DatapathError

JUMP_COMMENT = "AWS SNAT CHAIN"
SNAT_COMMENT = "AWS, SNAT"


def chain_rules(chain: str, primary_ip: str, vpc_cidrs: Sequence[str]) -> list[str]:
    """The chain's rules, in iptables-save syntax."""
    rules = [
        f'-A {chain} -d {cidr} -m comment --comment "{JUMP_COMMENT}" -j RETURN'
        for cidr in vpc_cidrs
    ]
    rules.append(
        f'-A {chain} -m comment --comment "{SNAT_COMMENT}" -m addrtype ! --dst-type LOCAL'
        f" -j SNAT --to-source {primary_ip} --random-fully"
    )
    return rules


def jump_rule(chain: str) -> str:
    return f'-A POSTROUTING -m comment --comment "{JUMP_COMMENT}" -j {chain}'


def has_jump(saved_nat: str, chain: str) -> bool:
    """Whether ``iptables-save -t nat`` output already jumps from POSTROUTING to ``chain``."""
    return any(
        line.startswith("-A POSTROUTING ") and line.split()[-2:] == ["-j", chain]
        for line in saved_nat.splitlines()
    )


def restore_text(chain: str, primary_ip: str, vpc_cidrs: Sequence[str], with_jump: bool) -> str:
    lines = ["*nat", f":{chain} - [0:0]", f"-F {chain}"]
    lines += chain_rules(chain, primary_ip, vpc_cidrs)
    if with_jump:
        lines.append(jump_rule(chain))
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def removal_text(saved_nat: str, chain: str) -> str:
    """Rules text deleting the jump(s) and the chain (external SNAT turned on)."""
    lines = ["*nat"]
    lines += [
        "-D" + line[2:]
        for line in saved_nat.splitlines()
        if line.startswith("-A POSTROUTING ") and line.split()[-2:] == ["-j", chain]
    ]
    if f":{chain} " in saved_nat:
        lines += [f"-F {chain}", f"-X {chain}"]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


EGRESS_COMMENT = "AWS EGRESS"
EGRESS_V4_CHAIN = "AWS-EGRESS-V4"
EGRESS_V6_CHAIN = "AWS-EGRESS-V6"


def egress_text(chain: str, source_range: str, snat_to: str, multicast: str, saved: str) -> str:
    """Upstream's egress-cni SNAT as one node-wide chain: packets from the node-local
    ``source_range`` (IPv4 egress of IPv6 pods, or the reverse) leave SNATed to ``snat_to``,
    multicast excepted. Flushed and refilled; the POSTROUTING jump added once."""
    lines = ["*nat", f":{chain} - [0:0]", f"-F {chain}"]
    lines.append(f'-A {chain} -d {multicast} -m comment --comment "{EGRESS_COMMENT}" -j ACCEPT')
    lines.append(
        f'-A {chain} -m comment --comment "{EGRESS_COMMENT}" -j SNAT --to-source {snat_to}'
    )
    if not has_jump(saved, chain):
        lines.append(
            f'-A POSTROUTING -s {source_range} -m comment --comment "{EGRESS_COMMENT}" -j {chain}'
        )
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


class IptablesRunner:
    """Runs iptables-save / iptables-restore (``ip6tables-*`` with ``ipv6``), inside
    ``netns_path`` (via nsenter) if given."""

    def __init__(
        self, netns_path: str | None = None, timeout: float = 30.0, ipv6: bool = False
    ) -> None:
        self.netns_path = netns_path
        self.timeout = timeout
        self.tool = "ip6tables" if ipv6 else "iptables"

    def _argv(self, *argv: str) -> list[str]:
        prefix = [] if self.netns_path is None else ["nsenter", f"--net={self.netns_path}"]
        return [*prefix, *argv]

    def _run(self, argv: list[str], stdin: str | None = None) -> str:
        try:
            done = subprocess.run(
                argv, input=stdin, capture_output=True, text=True, timeout=self.timeout
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DatapathError(f"{argv[0]}: {exc}") from exc
        if done.returncode != 0:
            raise DatapathError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout

    def save(self, table: str = "nat") -> str:
        return self._run(self._argv(f"{self.tool}-save", "-t", table))

    def restore(self, text: str) -> None:
        self._run(self._argv(f"{self.tool}-restore", "-w", "--noflush"), stdin=text)


class SnatManager:
    """Applies (or, for external SNAT, removes) the node SNAT rules."""

    def __init__(self, runner: IptablesRunner) -> None:
        self.runner = runner

    def apply(self, chain: str, primary_ip: str, vpc_cidrs: Sequence[str], external: bool) -> None:
        saved = self.runner.save("nat")
        if external:
            if f":{chain} " in saved or has_jump(saved, chain):
                self.runner.restore(removal_text(saved, chain))
            return
        self.runner.restore(restore_text(chain, primary_ip, vpc_cidrs, not has_jump(saved, chain)))

    def apply_egress(self, chain: str, source_range: str, snat_to: str, multicast: str) -> None:
        """The egress SNAT chain (see :func:`egress_text`)."""
        saved = self.runner.save("nat")
        self.runner.restore(egress_text(chain, source_range, snat_to, multicast, saved))
