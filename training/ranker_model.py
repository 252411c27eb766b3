"""CTR ranker: DCN-v2 (Wang et al. 2021) over hashed ids, standardised dense features and
text-embedding vectors, plus the loss wrapper and the saved bundle serving loads.

The feature columns are discovered from the training frame, not hard-coded, so a feature
service can grow a column without a code change here:
    ids      user_id, item_id and every string column (e.g. item_category) -> hashed embeddings
    dense    every numeric column (e.g. query_item_cosine) -> standardised with train stats,
             clipped to +-`clip` standard deviations, and, for a column with nulls in training,
             a 0/1 "missing" indicator next to it
    vectors  every list/array column (e.g. item_title_embedding) -> a learned projection
Keys, the label and oracle-only columns (p_click) are never features.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from training.common import KEY_COLUMNS

ID_COLUMNS = ("user_id", "item_id")
MAX_POSITION = 64  # position-bias slots: 0 = unknown, 1..63 = list positions 0..62 (capped)
DENSE_CLIP = 5.0  # standard deviations
NEVER_FEATURES = set(KEY_COLUMNS) | {
    "p_click",
    "p_click_position_free",
    "session_id",
    "batch_id",
    "query",
}


def hash_ids(values, buckets: int) -> np.ndarray:
    """Stable across processes and machines (unlike Python's salted hash()); bucket 0 is
    reserved for missing values."""
    s = pd.Series(values, dtype="object")
    missing = s.isna().to_numpy()
    h = pd.util.hash_array(s.fillna("").astype(str).to_numpy(dtype=object))
    out = (h % np.uint64(buckets - 1)).astype(np.int64) + 1
    out[missing] = 0
    return out


# Serving encodes a couple of hundred rows per request whose ids and categories repeat from
# request to request, and hashing them through pandas costs more than the model's forward
# pass. `pd.util.hash_array` hashes each element on its own (no element's hash depends on
# another's), so a string's bucket is the same in any array: it can be kept. Frames up to
# this many rows take the kept buckets; bigger ones (training sets) stay vectorised.
CACHED_IDS_MAX_ROWS = 4096
_BUCKETS_OF: dict[int, dict[str, int]] = {}  # buckets -> {string: its bucket}
_BUCKETS_OF_MAX = 1 << 20  # strings kept per bucket count before starting afresh


def hash_ids_cached(values, buckets: int) -> np.ndarray:
    """`hash_ids(values, buckets)`, value by value from a cache: None is bucket 0, a str
    seen before gets its kept bucket, a new str is hashed once however often it repeats (a
    user's id is on every row of a request) and kept; anything else (NaN, numbers, other
    types) goes through `hash_ids` itself."""
    kept = _BUCKETS_OF.setdefault(buckets, {})
    out = [0] * len(values)
    new: dict[str, list[int]] = {}  # a str not kept yet -> its positions
    other: list[int] = []
    for i, v in enumerate(values):
        if v is None:
            continue
        if type(v) is str:  # exactly str: a subclass may print differently under astype(str)
            b = kept.get(v)
            if b is None:
                new.setdefault(v, []).append(i)
            else:
                out[i] = b
        else:
            other.append(i)
    if new:
        if len(kept) + len(new) > _BUCKETS_OF_MAX:
            kept.clear()
        # hash_ids' own arithmetic on strings (no nulls among them: no fill, no bucket 0),
        # without its Series round trip: that costs more than the hashing of a few strings.
        h = pd.util.hash_array(np.asarray(list(new), dtype=object))
        fresh = ((h % np.uint64(buckets - 1)).astype(np.int64) + 1).tolist()
        for v, b in zip(new, fresh):
            kept[v] = b
            for i in new[v]:
                out[i] = b
    if other:
        for i, b in zip(other, hash_ids([values[i] for i in other], buckets).tolist()):
            out[i] = b
    return np.asarray(out, dtype=np.int64)


def _is_vector(series: pd.Series) -> bool:
    first = series.dropna().head(1)
    return len(first) == 1 and isinstance(first.iloc[0], (list, tuple, np.ndarray))


@dataclass
class FeatureSpec:
    sparse: list[str]
    dense: list[str]
    vectors: dict[str, int]
    buckets: int
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    # Dense columns with nulls in training, each given a 0/1 indicator input: a null is
    # information (no interaction with the category, an item never shown), which mean
    # imputation alone erases. Empty in specs saved before it existed.
    missing: list[str] = field(default_factory=list)
    # Standardised values are clipped to +-clip (0: no clip, as in older specs): a served value
    # far outside the training range (hours since the last event when training saw minutes)
    # must not be extrapolated through the cross layers' products.
    clip: float = 0.0

    @property
    def dense_width(self) -> int:
        """Width of the encoded dense input: the columns and their missing indicators."""
        return len(self.dense) + len(self.missing)

    @classmethod
    def discover(
        cls, frame: pd.DataFrame, buckets: int = 2**15, feature_names: list[str] | None = None
    ) -> FeatureSpec:
        """Fit column roles and the dense standardisation on the (training) frame."""
        cols = [c for c in frame.columns if c not in NEVER_FEATURES]
        if feature_names is not None:
            wanted = set(feature_names)
            cols = [c for c in cols if c in wanted or c.split("__")[-1] in wanted]
        sparse = [c for c in ID_COLUMNS if c in frame]
        dense, vectors = [], {}
        for c in cols:
            s = frame[c]
            if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
                dense.append(c)
            elif _is_vector(s):
                vectors[c] = len(s.dropna().iloc[0])
            elif pd.api.types.is_datetime64_any_dtype(s):
                continue
            else:
                sparse.append(c)
        x = frame[dense].astype(float).to_numpy() if dense else np.zeros((len(frame), 0))
        missing = [c for c, has in zip(dense, np.isnan(x).any(axis=0)) if has]
        spec = cls(sparse, dense, vectors, buckets, missing=missing, clip=DENSE_CLIP)
        mean = np.nan_to_num(np.nanmean(x, axis=0)) if len(x) else np.zeros(len(dense))
        std = np.nan_to_num(np.nanstd(x, axis=0), nan=1.0)
        spec.mean = mean.tolist()
        spec.std = np.where(std > 1e-12, std, 1.0).tolist()
        return spec

    def encode(
        self, frame: pd.DataFrame, cached_ids: bool | None = None
    ) -> dict[str, torch.Tensor]:
        """Model inputs of a frame. `cached_ids`: hash ids through `hash_ids_cached` (same
        buckets, tests/test_serving_encode.py); None: for frames up to CACHED_IDS_MAX_ROWS."""
        n = len(frame)
        if cached_ids is None:
            cached_ids = n <= CACHED_IDS_MAX_ROWS
        hash_fn = hash_ids_cached if cached_ids else hash_ids
        ids = (
            np.stack(
                [
                    hash_fn(frame[c].to_numpy(), self.buckets)
                    if c in frame
                    else np.zeros(n, np.int64)
                    for c in self.sparse
                ],
                axis=1,
            )
            if self.sparse
            else np.zeros((n, 0), np.int64)
        )
        if self.dense:
            raw = frame[self.dense].astype(float).to_numpy()
            # Missing values become the training mean (0 after standardisation), and say so
            # in their indicator.
            x = np.nan_to_num((raw - np.asarray(self.mean)) / np.asarray(self.std))
            if self.clip:
                x = np.clip(x, -self.clip, self.clip)
            if self.missing:
                where = [self.dense.index(c) for c in self.missing]
                x = np.concatenate([x, np.isnan(raw[:, where])], axis=1)
        else:
            x = np.zeros((n, 0))
        vecs = []
        for c, dim in self.vectors.items():
            v = np.zeros((n, dim), np.float32)
            for i, val in enumerate(frame[c].to_numpy()):
                if val is not None and not (np.isscalar(val) and pd.isna(val)):
                    v[i] = np.asarray(val, np.float32)
            vecs.append(v)
        out = {
            "ids": torch.from_numpy(ids),
            "dense": torch.from_numpy(x.astype(np.float32)),
            "vectors": torch.from_numpy(
                np.concatenate(vecs, 1) if vecs else np.zeros((n, 0), np.float32)
            ),
        }
        if "label" in frame:
            out["label"] = torch.as_tensor(frame["label"].to_numpy(dtype=np.float32))
        if "position" in frame:
            # Only the training loss reads it (RankerTrain's position bias); never a feature.
            pos = pd.to_numeric(frame["position"], errors="coerce").fillna(-1).to_numpy()
            out["position"] = torch.as_tensor(
                np.clip(pos, -1, MAX_POSITION - 2) + 1, dtype=torch.long
            )
        return out


@dataclass
class RankerConfig:
    n_sparse: int
    n_dense: int
    vector_dim: int
    buckets: int = 2**15
    emb_dim: int = 16
    vector_proj: int = 16
    cross_layers: int = 3
    deep: tuple[int, ...] = (256, 128)
    dropout: float = 0.1


class CrossLayer(nn.Module):
    """x_{l+1} = x0 * (W x_l + b) + x_l: explicit feature crosses of bounded degree."""

    def __init__(self, width: int):
        super().__init__()
        self.lin = nn.Linear(width, width)

    def forward(self, x0, x):
        return x0 * self.lin(x) + x


class DCNv2(nn.Module):
    def __init__(self, cfg: RankerConfig):
        super().__init__()
        self.cfg = cfg
        # One table per id field: user and item ids must not share (and collide in) one space.
        self.embeddings = nn.ModuleList(
            nn.Embedding(cfg.buckets, cfg.emb_dim) for _ in range(cfg.n_sparse)
        )
        self.vector_proj = nn.Linear(cfg.vector_dim, cfg.vector_proj) if cfg.vector_dim else None
        width = (
            cfg.n_sparse * cfg.emb_dim + cfg.n_dense + (cfg.vector_proj if cfg.vector_dim else 0)
        )
        self.cross = nn.ModuleList(CrossLayer(width) for _ in range(cfg.cross_layers))
        layers, prev = [], width
        for h in cfg.deep:
            layers += [nn.Linear(prev, h), nn.ReLU(), nn.Dropout(cfg.dropout)]
            prev = h
        self.deep = nn.Sequential(*layers)
        self.head = nn.Linear(width + prev, 1)
        for emb in self.embeddings:
            nn.init.normal_(emb.weight, std=0.01)

    def forward(self, ids, dense, vectors):
        parts = [emb(ids[:, i]) for i, emb in enumerate(self.embeddings)] + [dense]
        if self.vector_proj is not None:
            parts.append(self.vector_proj(vectors))
        x0 = torch.cat(parts, dim=1)
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return self.head(torch.cat([x, self.deep(x0)], dim=1)).squeeze(-1)


class RankerTrain(nn.Module):
    """Loss wrapper (torchrec DLRMTrain style): the model stays a pure scorer for serving.

    With `position_bias` the training logit is model(x) + b[position] (a "position-aware
    learning" shallow tower, Guo et al. 2019): the logged clicks depend on where the item was
    shown, which serving cannot know when it ranks candidates, so the examination effect is
    learnt here and dropped at inference. Position never enters the model itself.
    """

    def __init__(self, model: DCNv2, position_bias: bool = False):
        super().__init__()
        self.model = model
        self.position_bias = nn.Embedding(MAX_POSITION, 1) if position_bias else None
        if self.position_bias is not None:
            nn.init.zeros_(self.position_bias.weight)

    def forward(self, batch: dict[str, torch.Tensor]):
        logits = self.model(batch["ids"], batch["dense"], batch["vectors"])
        if self.position_bias is not None and "position" in batch:
            logits = logits + self.position_bias(batch["position"]).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits.float(), batch["label"])
        return loss, logits.detach()


@dataclass
class LinearConfig:
    n_dense: int
    vector_dim: int


class LinearRanker(nn.Module):
    """Logistic regression on the standardised dense features and the raw vectors (ids left
    out), with the same forward signature as DCNv2: the ranker job's baseline, servable
    through the same RankerBundle when it beats the DCN on validation."""

    def __init__(self, cfg: LinearConfig):
        super().__init__()
        self.cfg = cfg
        self.linear = nn.Linear(cfg.n_dense + cfg.vector_dim, 1)

    def forward(self, ids, dense, vectors):
        return self.linear(torch.cat([dense, vectors], dim=1)).squeeze(-1)

    @classmethod
    def from_coefficients(cls, cfg: LinearConfig, coef, intercept: float) -> LinearRanker:
        model = cls(cfg)
        with torch.no_grad():
            model.linear.weight.copy_(torch.as_tensor(np.asarray(coef, np.float32).reshape(1, -1)))
            model.linear.bias.fill_(float(intercept))
        return model


# Saved in ranker.json as "kind"; a file without it is a DCN-v2 (saved before the gate).
KINDS = {"dcn_v2": (DCNv2, RankerConfig), "logreg": (LinearRanker, LinearConfig)}


class RankerBundle:
    """Model + feature spec: everything needed to score a frame exactly as in training.
    The model is a DCNv2 or, when the ship gate chose the baseline, a LinearRanker."""

    def __init__(self, model: DCNv2 | LinearRanker, spec: FeatureSpec):
        self.model = model.eval()
        self.spec = spec

    @property
    def kind(self) -> str:
        return "logreg" if isinstance(self.model, LinearRanker) else "dcn_v2"

    @torch.no_grad()
    def predict(self, frame: pd.DataFrame, batch_size: int = 8192) -> np.ndarray:
        enc = self.spec.encode(frame)
        device = next(self.model.parameters()).device
        out = []
        for i in range(0, len(frame), batch_size):
            b = {k: enc[k][i : i + batch_size].to(device) for k in ("ids", "dense", "vectors")}
            out.append(torch.sigmoid(self.model(**b).float()).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        torch.save(self.model.state_dict(), folder / "model.pt")
        (folder / "ranker.json").write_text(
            json.dumps(
                {"kind": self.kind, "config": asdict(self.model.cfg), "spec": asdict(self.spec)},
                indent=2,
            )
        )
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> RankerBundle:
        folder = Path(folder)
        meta = json.loads((folder / "ranker.json").read_text())
        net, config = KINDS[meta.get("kind", "dcn_v2")]
        cfg = meta["config"]
        if "deep" in cfg:
            cfg["deep"] = tuple(cfg["deep"])
        model = net(config(**cfg))
        model.load_state_dict(
            torch.load(folder / "model.pt", weights_only=True, map_location="cpu")
        )
        return cls(model, FeatureSpec(**meta["spec"]))
