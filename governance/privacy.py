"""Pseudonymisation: external identifiers become keyed hashes before they reach any table.

HMAC-SHA256 with a secret key (settings.pseudonym_key): the same shop id always maps to the same
pseudonym, so joins keep working, but without the key nobody can recompute or reverse it.
"""

from __future__ import annotations

import hashlib
import hmac

import pandas as pd

from governance.schemas import PSEUDONYM_HEX_CHARS, PSEUDONYM_PREFIX


def pseudonymise(identifier: str, key: str) -> str:
    digest = hmac.new(key.encode(), str(identifier).encode(), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:PSEUDONYM_HEX_CHARS]


def pseudonymise_series(identifiers: pd.Series, key: str) -> pd.Series:
    """Vectorised over the distinct values: user ids repeat across millions of events."""
    codes, uniques = pd.factorize(identifiers, use_na_sentinel=True)
    mapped = pd.Index([pseudonymise(u, key) for u in uniques], dtype=object)
    out = pd.Series(mapped.take(codes), index=identifiers.index, dtype=object)
    out[codes < 0] = None
    return out


def is_pseudonym(value: str) -> bool:
    return (
        isinstance(value, str)
        and value.startswith(PSEUDONYM_PREFIX)
        and len(value) == len(PSEUDONYM_PREFIX) + PSEUDONYM_HEX_CHARS
    )
