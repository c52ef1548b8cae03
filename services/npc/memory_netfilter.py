"""An in-memory twin of the commands apply.py runs, for tests and benchmarks.

`MemoryKernel.run` is an apply.Runner: it answers `iptables-{nft,legacy}-save`,
`iptables-*-restore --noflush`, `ipset save` and `ipset restore -exist` from one
filter table and one set store, with the kernel's rules that matter to the planner:
a COMMIT applies whole or not at all, `-D` must match a rule, a rule or a list:set
may only name an existing set, a set in use cannot be destroyed, an ipset script stops
at its first bad line (earlier lines stay applied). `fail(tool, times)` makes the
next calls of a tool fail, as a real one would.
"""
from __future__ import annotations

from collections.abc import Sequence

from .apply import RunResult
from .ipset import IPSet, IPSetType, normalize_member
from .ipset import render_save as render_ipsets
from .iptables import Rule, render_save, tokenize

BUILTIN = ("INPUT", "FORWARD", "OUTPUT")


class KernelError(Exception):
    """A command the kernel would refuse; its message becomes the tool's stderr."""


class MemoryKernel:
    def __init__(self) -> None:
        self.chains: dict[str, list[Rule]] = {name: [] for name in BUILTIN}
        self.sets: dict[str, IPSet] = {}
        self.calls: list[str] = []  # tool names, in order
        self._failures: dict[str, tuple[int, str]] = {}

    def fail(self, tool: str, times: int = 1, stderr: str = "injected failure") -> None:
        """The next `times` calls of `tool` (argv[0], e.g. 'iptables-nft-restore') fail."""
        self._failures[tool] = (times, stderr)

    # -- the Runner ---------------------------------------------------------------------
    def run(self, argv: Sequence[str], stdin: str | None = None) -> RunResult:
        tool = argv[0]
        self.calls.append(tool)
        times, stderr = self._failures.get(tool, (0, ""))
        if times:
            self._failures[tool] = (times - 1, stderr)
            return RunResult(1, "", stderr)
        try:
            if tool.startswith("iptables-") and tool.endswith("-save"):
                return RunResult(0, render_save(self.chains), "")
            if tool.startswith("iptables-") and tool.endswith("-restore"):
                self._iptables_restore(stdin or "")
            elif tool == "ipset" and argv[1:2] == ["save"]:
                return RunResult(0, render_ipsets(self.sets), "")
            elif tool == "ipset" and argv[1:2] == ["restore"]:
                self._ipset_restore(stdin or "")
            else:
                return RunResult(127, "", f"{tool}: not in the twin")
        except KernelError as exc:
            return RunResult(1, "", str(exc))
        return RunResult(0, "", "")

    # -- iptables ---------------------------------------------------------------------
    def _iptables_restore(self, text: str) -> None:
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            return
        if lines[0] != "*filter" or lines[-1] != "COMMIT":
            raise KernelError("iptables-restore: only *filter ... COMMIT here")
        staged = {k: list(v) for k, v in self.chains.items()}
        for number, line in enumerate(lines[1:-1], 2):
            if line.startswith(":"):
                staged[line[1:].split()[0]] = []
                continue
            op, chain, *args = tokenize(line)
            position = int(args.pop(0)) if op == "-I" else None
            rule = tuple(args)
            if chain not in staged:
                raise KernelError(f"iptables-restore: line {number} failed: no chain {chain}")
            if op == "-D":
                if rule not in staged[chain]:
                    raise KernelError(f"iptables-restore: line {number} failed: no such rule")
                staged[chain].remove(rule)
                continue
            self._check_rule(staged, rule, number)
            staged[chain].insert(position - 1 if position else len(staged[chain]), rule)
        self.chains = staged

    def _check_rule(self, staged: dict[str, list[Rule]], rule: Rule, number: int) -> None:
        for i, token in enumerate(rule):
            if token == "--match-set" and rule[i + 1] not in self.sets:
                raise KernelError(f"iptables-restore: line {number} failed: set {rule[i + 1]} does not exist")
        if "-j" in rule:
            target = rule[rule.index("-j") + 1]
            if target.startswith("WEAVE-") and target not in staged:
                raise KernelError(f"iptables-restore: line {number} failed: no chain {target}")

    # -- ipset --------------------------------------------------------------------------
    def _ipset_restore(self, text: str) -> None:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    self._ipset_line(tokenize(line))
                except KernelError as exc:
                    raise KernelError(f"ipset v7.17: Error in line {number}: {exc}") from None

    def _ipset_line(self, words: list[str]) -> None:
        op, name, rest = words[0], words[1], words[2:]
        if op == "create":
            held = self.sets.get(name)
            if held is not None and held.type.value != rest[0]:
                raise KernelError("Set cannot be created: set with the same name already exists")
            if held is None:
                self.sets[name] = IPSet(name, IPSetType(rest[0]), {}, negated=rest[0] == "hash:net")
            return
        held = self.sets.get(name)
        if held is None:
            raise KernelError("The set with the given name does not exist")
        if op == "destroy":
            if self._in_use(name):
                raise KernelError("Set cannot be destroyed: it is in use by a kernel component")
            del self.sets[name]
            return
        member = normalize_member(held.type, rest[0])
        members = {normalize_member(held.type, m): c for m, c in held.members.items()}
        if op == "add":
            if held.type is IPSetType.LIST_SET and member not in self.sets:
                raise KernelError(f"Set to be added/deleted/tested as element does not exist: {member}")
            members.setdefault(member, rest[2] if rest[1:2] == ["comment"] else "")
        elif op == "del":
            members.pop(member, None)
        else:
            raise KernelError(f"unknown command {op}")
        self.sets[name] = IPSet(name, held.type, members, negated=held.negated)

    def _in_use(self, name: str) -> bool:
        in_rules = any(name in rule for rules in self.chains.values() for rule in rules)
        return in_rules or any(name in s.members for s in self.sets.values())
