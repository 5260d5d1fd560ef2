"""`s.fork(n)` and `forks.join()`.

The parent's text is sent to the backend once (`cache_prefix`) before any branch runs, so every
branch's first call finds it in the radix cache. Branches run concurrently (see ProgramState).
`join()` puts each variable the branches set into the parent as a list (one entry per branch);
`join(mode="concat")` appends the branches' new texts to the parent, in branch order.
"""

from __future__ import annotations

from collections.abc import Iterator

from arborlm.backends.base import BackendError, CallMeta
from arborlm.ir import Fork, Join
from arborlm.state import ProgramState

JOIN_MODES = ("gather_variable", "concat")


class ForkGroup:
    def __init__(self, parent: ProgramState, branches: list[ProgramState], base_len: int,
                 prefix_meta: CallMeta | None) -> None:
        self.parent = parent
        self.branches = branches
        self.base_len = base_len  # parent text length at the fork
        self.base_vars = {k: id(v) for k, v in parent.variables().items()}
        self.prefix_meta = prefix_meta
        self.joined = False

    def __getitem__(self, i: int) -> ProgramState:
        return self.branches[i]

    def __setitem__(self, i: int, state: ProgramState) -> None:
        # `forks[i] += expr` assigns the (same) branch back after ProgramState.__iadd__
        if state is not self.branches[i]:
            raise TypeError("fork branches cannot be replaced; add to them with forks[i] += ...")

    def __len__(self) -> int:
        return len(self.branches)

    def __iter__(self) -> Iterator[ProgramState]:
        return iter(self.branches)

    def join(self, mode: str = "gather_variable") -> None:
        if mode not in JOIN_MODES:
            raise ValueError(f"join mode must be one of {JOIN_MODES}, not {mode!r}")
        if self.joined:
            raise RuntimeError("this fork group was joined already")
        for b in self.branches:
            b.wait_idle()
        for i, b in enumerate(self.branches):
            if b.error() is not None:
                raise RuntimeError(f"fork branch {i} failed: {b.error()}") from b.error()
        self.joined = True
        parent = self.parent
        parent.nodes.append(Join(mode))
        for b in self.branches:
            parent.add_meta(b.meta())
            parent.num_calls += b.num_calls - 1
        if mode == "concat":
            if parent.roles.open_role is None and any(b.roles.messages != parent.roles.messages for b in self.branches):
                raise RuntimeError("join(mode='concat') of branches that added whole chat messages is not supported: "
                                   "concat the branches inside one open role")
            for b in self.branches:
                parent.append(b.text()[self.base_len:])
            return
        names: list[str] = []
        for b in self.branches:
            for name, value in b.variables().items():
                if name not in names and (name not in self.base_vars or value is not parent.variables().get(name)):
                    names.append(name)
        for name in names:
            values = [b.variables().get(name) for b in self.branches]
            metas = [b._metas.get(name) for b in self.branches]
            parent.set_var(name, values, metas)


def fork_state(parent: ProgramState, num_branches: int) -> ForkGroup:
    if not isinstance(num_branches, int) or num_branches < 1:
        raise ValueError(f"fork needs a positive number of branches, not {num_branches!r}")
    parent.wait_idle()
    parent.nodes.append(Fork(num_branches))
    prefix_meta = None
    if parent.tracing:
        from arborlm.ir import StopTrace

        raise StopTrace("fork")
    if parent.text():
        try:
            prefix_meta = parent.backend.cache_prefix(parent.text())
        except BackendError as e:
            raise RuntimeError(f"fork: sending the prefix failed: {e}") from None
        parent.add_meta(prefix_meta)
    branches = [parent.branch_copy() for _ in range(num_branches)]
    return ForkGroup(parent, branches, len(parent.text()), prefix_meta)
