"""Online experiments: variants with traffic shares, assigned by a stable hash of the user.

    CARTWISE_EXPERIMENT='{"name": "v1-vs-v2", "variants": [
        {"name": "control", "model": "cartwise-ranker:abc", "share": 0.5},
        {"name": "treatment", "model": "cartwise-ranker:def", "share": 0.5}],
        "shadow": "cartwise-ranker:ghi"}'

A variant's `model` is a ranker tag in the model store, or one of the orderings that need no
model: `random` (the candidates in a random order: the floor any ranker must beat) and
`popularity` (the catalogue's popularity). `shadow` (optional) is a ranker scored on the same
requests and logged next to the served scores, never shown.

Assignment hashes the experiment name with the user's pseudonym (SHA-256, not Python's salted
hash), so a user keeps their variant across requests, workers and restarts, and a new
experiment reshuffles users independently of the last one. Anonymous requests hash a random
key, so they spread over the variants by the same shares.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

MODEL_FREE = ("random", "popularity")
DEFAULT_EXPERIMENT = "default"


@dataclass(frozen=True)
class Variant:
    name: str
    model: str  # a ranker tag, or 'random' / 'popularity'
    share: float

    @property
    def needs_model(self) -> bool:
        return self.model not in MODEL_FREE


@dataclass(frozen=True)
class Experiment:
    name: str
    variants: tuple[Variant, ...]
    shadow: str | None = None
    _bounds: tuple[float, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self):
        if not self.variants:
            raise ValueError("an experiment needs at least one variant")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique: {names}")
        if any(v.share < 0 for v in self.variants):
            raise ValueError("variant shares must be >= 0")
        total = sum(v.share for v in self.variants)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"variant shares must add up to 1, not {total:g}")
        acc, bounds = 0.0, []
        for v in self.variants:
            acc += v.share
            bounds.append(acc)
        object.__setattr__(self, "_bounds", tuple(bounds))

    def assign(self, key: str) -> Variant:
        """The variant of a user (pseudonym) or of an anonymous request (a random key)."""
        u = bucket(self.name, key)
        for v, upper in zip(self.variants, self._bounds):
            if u < upper:
                return v
        return self.variants[-1]  # u within float rounding of 1.0

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "variants": [
                    {"name": v.name, "model": v.model, "share": v.share} for v in self.variants
                ],
                "shadow": self.shadow,
            }
        )

    @property
    def models(self) -> list[str]:
        tags = [v.model for v in self.variants if v.needs_model]
        if self.shadow:
            tags.append(self.shadow)
        return list(dict.fromkeys(tags))


def bucket(salt: str, key: str) -> float:
    """A uniform number in [0, 1) fixed by (salt, key)."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def single(model: str) -> Experiment:
    """No experiment configured: every request gets the one serving model."""
    return Experiment(DEFAULT_EXPERIMENT, (Variant("default", model, 1.0),))


def parse(text: str | None, default_model: str) -> Experiment:
    """The experiment from its JSON (CARTWISE_EXPERIMENT); none configured: `single`."""
    if not text or not text.strip():
        return single(default_model)
    try:
        raw = json.loads(text)
        variants = tuple(
            Variant(str(v["name"]), str(v["model"]), float(v["share"])) for v in raw["variants"]
        )
        return Experiment(str(raw.get("name") or DEFAULT_EXPERIMENT), variants, raw.get("shadow"))
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"CARTWISE_EXPERIMENT is not a valid experiment ({exc}); expected "
            '{"name": ..., "variants": [{"name", "model", "share"}, ...], "shadow": optional}'
        ) from exc
