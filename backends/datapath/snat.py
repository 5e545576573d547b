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


class IptablesRunner:
    """Runs iptables-save / iptables-restore, inside ``netns_path`` (via nsenter) if given."""

    def __init__(self, netns_path: str | None = None, timeout: float = 30.0) -> None:
        self.netns_path = netns_path
        self.timeout = timeout

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
        return self._run(self._argv("iptables-save", "-t", table))

    def restore(self, text: str) -> None:
        self._run(self._argv("iptables-restore", "-w", "--noflush"), stdin=text)


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
