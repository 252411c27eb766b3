"""Cosine similarity of embedding vectors: the one definition of the similarity features.

The on-demand views `user_item_similarity` and `query_item_similarity` (feature_repo/) return
`cosine(a, b)`. Online, Feast hands them lists of vectors (None where a view has no row); the
set-based training path (features/frames.py) calls the same views with `VectorBatch` columns,
so a frame of a million rows is computed as matrices, without a Python float per element.

The value is 0.0 when either vector is missing or empty, when the two differ in length, or when
either has zero norm. A column's vectors are expected to share one length: a vector of another
length than the column's first non-empty one counts as missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Rows per block of the float64 products: bounds the temporaries at ~25 MB for 384 dims.
BLOCK_ROWS = 8192


@dataclass
class VectorBatch:
    """A column of vectors as one matrix: `values[i]` is row i's vector where `valid[i]`."""

    values: np.ndarray  # (n, dim) float32
    valid: np.ndarray  # (n,) bool

    def __len__(self) -> int:
        return len(self.valid)

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])

    @classmethod
    def from_rows(cls, rows: Sequence) -> VectorBatch:
        """From what Feast hands an on-demand view online: a list of vectors or None."""
        n = len(rows)
        dim = next((len(r) for r in rows if r is not None and len(r) > 0), 0)
        values = np.zeros((n, dim), np.float32)
        valid = np.zeros(n, bool)
        for i, r in enumerate(rows):
            if r is not None and len(r) == dim and dim > 0:
                values[i] = r
                valid[i] = True
        return cls(values, valid)


def cosine(a: VectorBatch | Sequence, b: VectorBatch | Sequence) -> list[float]:
    """Row-wise cosine of two columns of vectors (see the module doc for the 0.0 cases)."""
    a = a if isinstance(a, VectorBatch) else VectorBatch.from_rows(a)
    b = b if isinstance(b, VectorBatch) else VectorBatch.from_rows(b)
    if len(a) != len(b):
        raise ValueError(f"columns differ in length: {len(a)} != {len(b)}")
    out = np.zeros(len(a), np.float64)
    if a.dim == 0 or a.dim != b.dim:
        return out.tolist()
    rows = np.flatnonzero(a.valid & b.valid)
    for start in range(0, len(rows), BLOCK_ROWS):
        idx = rows[start : start + BLOCK_ROWS]
        # float32 products are exact in float64; sums along each row are pairwise, so a row's
        # value does not depend on which other rows share its block.
        x = a.values[idx].astype(np.float64)
        y = b.values[idx].astype(np.float64)
        dot = (x * y).sum(axis=1)
        norms = np.sqrt((x * x).sum(axis=1)) * np.sqrt((y * y).sum(axis=1))
        ok = norms > 0
        out[idx[ok]] = dot[ok] / norms[ok]
    return out.tolist()
