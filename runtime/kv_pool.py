"""KV memory as tensors only: the token-indexed K/V pool and the request→token slot table.

Which slots are free, owned by a request, or held by the radix tree is bookkeeping in pure Python
(the scheduler and radix cache own it); this file only allocates the tensors attention reads.
"""

from __future__ import annotations

import torch


class KVPool:
    """Per-layer K and V, each `[num_slots, num_kv_heads, head_dim]`.

    Slot 0 is padding: it is never handed out, so padded gathers may read it harmlessly.
    Token t of any request lives at the same slot in every layer.
    """

    def __init__(
        self,
        num_layers: int,
        num_slots: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> None:
        if num_slots < 2:
            raise ValueError(f"num_slots={num_slots} leaves no usable slot (slot 0 is padding)")
        self.num_layers = num_layers
        self.num_slots = num_slots
        self.num_kv_heads = num_kv_heads
        self.head_dim = head_dim
        self.dtype = dtype
        self.device = torch.device(device)
        # zeros, not empty: padding slot 0 must hold finite values (masked scores times NaN is NaN).
        self.k_buffers = [
            torch.zeros(num_slots, num_kv_heads, head_dim, dtype=dtype, device=self.device) for _ in range(num_layers)
        ]
        self.v_buffers = [
            torch.zeros(num_slots, num_kv_heads, head_dim, dtype=dtype, device=self.device) for _ in range(num_layers)
        ]

    @property
    def bytes_per_token(self) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.k_buffers[0].element_size()

    @property
    def nbytes(self) -> int:
        return self.bytes_per_token * self.num_slots


class ReqToToken:
    """int32 table `[max_running, max_context]`: row r, column i = KV slot of token i of the request
    that holds row r. Columns past a request's length are stale and must be masked by readers."""

    def __init__(self, max_running: int, max_context: int, device: torch.device | str) -> None:
        self.max_running = max_running
        self.max_context = max_context
        self.device = torch.device(device)
        self.table = torch.zeros(max_running, max_context, dtype=torch.int32, device=self.device)

    def write_row(self, row: int, slots: list[int], start: int = 0) -> None:
        """table[row, start:start+len(slots)] = slots."""
        end = start + len(slots)
        if end > self.max_context:
            raise ValueError(f"request needs {end} tokens of context; max_context_len is {self.max_context}")
        self.table[row, start:end] = torch.tensor(slots, dtype=torch.int32, device=self.device)

    def write_cells(self, rows: list[int], cols: list[int], slots: list[int]) -> None:
        """table[rows[j], cols[j]] = slots[j] for all j, in one indexed write (the decode case)."""
        if cols and max(cols) >= self.max_context:
            raise ValueError(f"request needs {max(cols) + 1} tokens of context; max_context_len is {self.max_context}")
        r = torch.tensor(rows, dtype=torch.int64, device=self.device)
        c = torch.tensor(cols, dtype=torch.int64, device=self.device)
        self.table[r, c] = torch.tensor(slots, dtype=torch.int32, device=self.device)
