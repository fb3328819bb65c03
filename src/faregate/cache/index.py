"""`VectorIndex`: one semantic-cache partition's vectors, searched exactly.

Vectors are L2-normalised float32 rows, so cosine similarity is a dot product. A partition
holds only requests that could share an answer (same tenant, model group, system prompt,
parameters and earlier turns), so partitions stay small and an exact scan is both the most
accurate and, up to ~100k rows, fast enough: 10k rows × 384 dims is one 15 MB mat-vec, about
0.5 ms on this CPU (`bench/cache_eval.py` prints the lookup figure). Rows live in one
contiguous matrix that doubles when full; removal moves the last row into the hole.
"""

from __future__ import annotations

import numpy as np


class VectorIndex:
    __slots__ = ("dim", "_ids", "_rows", "_matrix")

    def __init__(self, dim: int, capacity: int = 16) -> None:
        self.dim = dim
        self._ids: list[str] = []
        self._rows: dict[str, int] = {}
        self._matrix = np.empty((capacity, dim), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, entry_id: str) -> bool:
        return entry_id in self._rows

    def add(self, entry_id: str, vector: np.ndarray) -> None:
        """Add (or replace) one normalised vector."""
        row = self._rows.get(entry_id)
        if row is None:
            row = len(self._ids)
            if row == len(self._matrix):
                grown = np.empty((2 * row, self.dim), dtype=np.float32)
                grown[:row] = self._matrix
                self._matrix = grown
            self._ids.append(entry_id)
            self._rows[entry_id] = row
        self._matrix[row] = vector

    def remove(self, entry_id: str) -> bool:
        row = self._rows.pop(entry_id, None)
        if row is None:
            return False
        last = len(self._ids) - 1
        if row != last:  # fill the hole with the last row
            moved = self._ids[last]
            self._matrix[row] = self._matrix[last]
            self._ids[row] = moved
            self._rows[moved] = row
        self._ids.pop()
        return True

    def search(self, vector: np.ndarray, k: int = 4) -> list[tuple[str, float]]:
        """The k most similar entries, best first, as (id, cosine)."""
        n = len(self._ids)
        if n == 0 or k <= 0:
            return []
        scores = self._matrix[:n] @ vector
        if n <= k:
            order = np.argsort(-scores)
        else:
            top = np.argpartition(-scores, k - 1)[:k]
            order = top[np.argsort(-scores[top])]
        return [(self._ids[i], float(scores[i])) for i in order]
