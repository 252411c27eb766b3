"""Next-item prediction on any session log: does cartwise's recommendation logic beat
popularity and plain item-to-item co-occurrence?

    python -m training.sessions --csv views.csv          # session_id,item_id,timestamp[,category]
    python -m training.sessions --sim-dir data/sim       # the simulator's raw event files

Each session is its items in time order (consecutive repeats collapsed, as a reload is not a
new choice). The last item is held out and predicted from the ones before. Sessions are split
by time: the latest --test-frac by end time are the test set, the --val-frac before them tune
the blend's weights, the rest train; the methods are then refitted on train + validation and
scored once on test.

Methods (all fall back to popularity for items they have no score for):
    popularity          items by training interactions (baseline)
    cooccurrence        sessions shared with the last item (baseline: plain item-to-item)
    covisitation        cartwise's co-visitation: items viewed shortly after each of the last
                        5 items, nearer steps and more recent items weighted higher
    similar_items       cosine similarity of items' session vectors, around the last 3 items
    category_affinity   popular items of the session's categories (needs a category column)
    blend               the serving logic: the four above mixed, weights tuned on validation

Recall@k is the share of test sessions whose held-out item is in the top k, MRR@k the mean
reciprocal rank (0 outside the top k); both with bootstrap intervals over sessions, and each
method's Recall@k as a paired ratio to popularity's.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from training.cli import parse_dataclass
from training.common import run_dir, write_json
from training.metrics import Interval, bootstrap_ci, paired_bootstrap_ci

BASELINE = "popularity"
SIM_TYPES = ("view", "click", "add_to_cart", "purchase")


@dataclass
class SessionArgs:
    csv: str | None = field(
        default=None, metadata={"help": "CSV with session_id,item_id,timestamp[,category]"}
    )
    sim_dir: str | None = field(
        default=None, metadata={"help": "a simulator output folder (events/*.csv.gz, items)"}
    )
    test_frac: float = field(default=0.2, metadata={"help": "latest share of sessions to test"})
    val_frac: float = field(default=0.1, metadata={"help": "share before test that tunes"})
    k: int = field(default=20, metadata={"help": "cut for Recall@k and MRR@k"})
    max_session_items: int = field(
        default=50, metadata={"help": "longer sessions add no co-occurrence (crawler noise)"}
    )
    window: int = field(default=3, metadata={"help": "co-visitation: steps ahead that count"})
    n_boot: int = field(default=1000, metadata={"help": "bootstrap resamples"})
    seed: int = field(default=0, metadata={"help": "bootstrap seed"})
    out_dir: str = field(default="runs", metadata={"help": "where the run folder goes"})


# ---------------------------------------------------------------- data


def load_csv(path: str | Path) -> pd.DataFrame:
    df = pd.read_csv(path, dtype={"session_id": str, "item_id": str})
    missing = {"session_id", "item_id", "timestamp"} - set(df.columns)
    if missing:
        raise SystemExit(
            f"{path}: missing column(s) {sorted(missing)}; "
            "need session_id,item_id,timestamp[,category]"
        )
    return df


def load_sim(folder: str | Path) -> pd.DataFrame:
    """Human item interactions from a simulator run. Bots are left out by the truth file, the
    way the governed tables flag them."""
    folder = Path(folder)
    parts = [
        pd.read_csv(
            f, usecols=["user_id", "session_id", "event_type", "item_id", "event_ts"], dtype=str
        )
        for f in sorted((folder / "events").glob("*.csv.gz"))
    ]
    ev = pd.concat(parts, ignore_index=True)
    ev = ev[ev["event_type"].isin(SIM_TYPES) & ev["item_id"].notna() & ev["session_id"].notna()]
    users = folder / "truth" / "users.parquet"
    if users.exists():
        truth = pd.read_parquet(users)
        if "is_bot" in truth:
            bots = set(truth.loc[truth["is_bot"], "user_id"])
            ev = ev[~ev["user_id"].isin(bots)]
    items = pd.read_csv(folder / "items.csv.gz", usecols=["item_id", "category_path"], dtype=str)
    items = items.rename(columns={"category_path": "category"}).drop_duplicates("item_id")
    ev = ev.merge(items, on="item_id", how="left")
    return ev.rename(columns={"event_ts": "timestamp"})[
        ["session_id", "item_id", "timestamp", "category"]
    ]


@dataclass
class Sessions:
    items: pd.Index  # item ids; positions are the item indices below
    seqs: list[np.ndarray]  # item indices per session, time order, repeats collapsed
    end: np.ndarray  # each session's last timestamp
    item_category: np.ndarray | None  # category index per item, -1 unknown
    categories: pd.Index | None


def prepare(df: pd.DataFrame) -> Sessions:
    df = df.dropna(subset=["session_id", "item_id", "timestamp"]).copy()
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True, errors="coerce", format="mixed")
    df = df.dropna(subset=["timestamp"]).sort_values(["session_id", "timestamp"], kind="mergesort")
    same = (df["session_id"] == df["session_id"].shift()) & (df["item_id"] == df["item_id"].shift())
    df = df[~same]
    items = pd.Index(sorted(df["item_id"].astype(str).unique()))
    codes = items.get_indexer(df["item_id"].astype(str))
    bounds = np.flatnonzero(
        np.r_[True, df["session_id"].to_numpy()[1:] != df["session_id"].to_numpy()[:-1], True]
    )
    seqs = [codes[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    ends = df["timestamp"].to_numpy()[bounds[1:] - 1]
    cat_idx = cats = None
    if "category" in df and df["category"].notna().any():
        first = df.dropna(subset=["category"]).drop_duplicates("item_id")
        cats = pd.Index(sorted(first["category"].astype(str).unique()))
        cat_idx = np.full(len(items), -1)
        cat_idx[items.get_indexer(first["item_id"].astype(str))] = cats.get_indexer(
            first["category"].astype(str)
        )
    return Sessions(items, seqs, ends, cat_idx, cats)


def split_by_time(s: Sessions, val_frac: float, test_frac: float):
    """Session indices (train, val, test) by end time; only sessions of 2+ items can be
    evaluated, but every session trains."""
    order = np.argsort(s.end, kind="mergesort")
    n = len(order)
    n_test, n_val = int(round(n * test_frac)), int(round(n * val_frac))
    train, val, test = (
        order[: n - n_test - n_val],
        order[n - n_test - n_val : n - n_test],
        order[n - n_test :],
    )
    evaluable = lambda idx: np.array([i for i in idx if len(s.seqs[i]) >= 2], dtype=int)  # noqa: E731
    return train, evaluable(val), evaluable(test)


# ---------------------------------------------------------------- methods


def _rownorm(m: np.ndarray) -> np.ndarray:
    top = m.max(axis=1, keepdims=True)
    return np.divide(m, top, out=np.zeros_like(m), where=top > 0)


class SessionModels:
    """Every method's item scores, fitted on a set of training sessions."""

    def __init__(self, n_items: int, window: int = 3, max_session_items: int = 50):
        self.n, self.window, self.max_items = n_items, window, max_session_items

    def fit(self, seqs: list[np.ndarray], item_category: np.ndarray | None) -> SessionModels:
        n = self.n
        flat = np.concatenate(seqs) if seqs else np.zeros(0, int)
        self.pop = np.bincount(flat, minlength=n).astype(np.float64)
        # Session x item incidence over sessions short enough to mean something.
        keep = [q for q in seqs if 2 <= len(np.unique(q)) <= self.max_items]
        rows = np.repeat(np.arange(len(keep)), [len(q) for q in keep])
        cols = np.concatenate(keep) if keep else np.zeros(0, int)
        inc = sparse.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(keep), n))
        inc.data[:] = 1.0
        co = (inc.T @ inc).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        self.cooc = co
        norm = 1 / (np.sqrt(np.asarray(inc.sum(0)).ravel()) + 1e-9)
        self.sim = (sparse.diags(norm) @ co @ sparse.diags(norm)).tocsr()
        # Directed co-visitation: b within `window` steps after a, weight 1/steps.
        src, dst, w = [], [], []
        for q in keep:
            for d in range(1, self.window + 1):
                if len(q) > d:
                    src.append(q[:-d])
                    dst.append(q[d:])
                    w.append(np.full(len(q) - d, 1.0 / d))
        if src:
            src, dst, w = np.concatenate(src), np.concatenate(dst), np.concatenate(w)
        self.covisit = sparse.csr_matrix((w, (src, dst)), shape=(n, n))
        self.covisit.setdiag(0)
        self.covisit.eliminate_zeros()
        self.item_category = item_category
        if item_category is not None:
            n_cat = int(item_category.max()) + 1
            self.cat_pop = np.zeros((max(n_cat, 1), n))
            known = item_category >= 0
            self.cat_pop[item_category[known], np.flatnonzero(known)] = self.pop[known]
        return self

    def scores(self, prefixes: list[np.ndarray]) -> dict[str, np.ndarray]:
        """(sessions x items) scores per method; each row-normalised to [0, 1] with a little
        popularity so ties and empty rows fall back to it."""
        m = len(prefixes)
        pop = self.pop / max(self.pop.max(), 1.0)
        tie = 1e-6 * np.broadcast_to(pop, (m, self.n))
        last = np.array([p[-1] for p in prefixes])
        out = {"popularity": np.array(np.broadcast_to(pop, (m, self.n)))}
        out["cooccurrence"] = _rownorm(self.cooc[last].toarray()) + tie
        rows, cols, vals = [], [], []
        for r, p in enumerate(prefixes):
            recent = p[::-1][:5]
            rows.extend([r] * len(recent))
            cols.extend(recent)
            vals.extend(1.0 / (1 + np.arange(len(recent))))
        weights = sparse.csr_matrix((vals, (rows, cols)), shape=(m, self.n))
        out["covisitation"] = _rownorm((weights @ self.covisit).toarray()) + tie
        three = weights.copy()
        three.data[three.data < 1 / 3 - 1e-9] = 0.0
        three.eliminate_zeros()
        out["similar_items"] = _rownorm((three @ self.sim).toarray()) + tie
        if self.item_category is not None:
            share = np.zeros((m, self.cat_pop.shape[0]))
            for r, p in enumerate(prefixes):
                c = self.item_category[p]
                c = c[c >= 0]
                if len(c):
                    share[r] = np.bincount(c, minlength=share.shape[1]) / len(c)
            out["category_affinity"] = _rownorm(share @ self.cat_pop) + tie
        return out

    @staticmethod
    def blend(scores: dict[str, np.ndarray], weights: dict[str, float]) -> np.ndarray:
        return sum(w * scores[name] for name, w in weights.items())


BLEND_PARTS = ("covisitation", "similar_items", "category_affinity", "popularity")


def ranks_of(scores: np.ndarray, targets: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per session: hit@k (0/1) and reciprocal rank within k (0 outside)."""
    own = scores[np.arange(len(targets)), targets]
    rank = 1 + (scores > own[:, None]).sum(axis=1)  # ties go in the target's favour nowhere:
    rank += (scores == own[:, None]).sum(axis=1) - 1  # a tied block ranks the target last
    hit = (rank <= k).astype(float)
    return hit, np.where(rank <= k, 1.0 / rank, 0.0)


def evaluate(
    models: SessionModels,
    s: Sessions,
    idx: np.ndarray,
    k: int,
    weights: dict | None = None,
    chunk: int = 2000,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """hits and reciprocal ranks per method over sessions `idx` (in chunks: scores are dense)."""
    res: dict[str, list] = {}
    for a in range(0, len(idx), chunk):
        part = idx[a : a + chunk]
        prefixes = [s.seqs[i][:-1] for i in part]
        targets = np.array([s.seqs[i][-1] for i in part])
        sc = models.scores(prefixes)
        if weights is not None:
            sc["blend"] = SessionModels.blend(sc, weights)
        for name, m in sc.items():
            h, rr = ranks_of(m, targets, k)
            res.setdefault(name, []).append((h, rr))
    return {
        n: (np.concatenate([h for h, _ in v]), np.concatenate([r for _, r in v]))
        for n, v in res.items()
    }


def tune_blend(models: SessionModels, s: Sessions, val_idx, k: int) -> tuple[dict, list]:
    """Grid over the blend weights, judged by validation Recall@k."""
    prefixes = [s.seqs[i][:-1] for i in val_idx]
    targets = np.array([s.seqs[i][-1] for i in val_idx])
    sc = models.scores(prefixes)
    parts = [p for p in BLEND_PARTS if p in sc]
    grid = [w for w in itertools.product((0.0, 0.3, 1.0), repeat=len(parts)) if any(w)]
    table, best = [], None
    for w in grid:
        weights = dict(zip(parts, w))
        hit, _ = ranks_of(SessionModels.blend(sc, weights), targets, k)
        table.append({"weights": weights, f"recall@{k}": float(hit.mean())})
        if best is None or hit.mean() > best[1]:
            best = (weights, hit.mean())
    return best[0], table


@dataclass
class MethodResult:
    recall: Interval
    mrr: Interval
    recall_ratio_to_popularity: Interval


def run(df: pd.DataFrame, args: SessionArgs) -> dict:
    t0 = time.time()
    s = prepare(df)
    train, val, test = split_by_time(s, args.val_frac, args.test_frac)
    if len(test) == 0:
        raise SystemExit("no test session has 2 or more items: nothing to predict")
    fit = lambda idx: SessionModels(len(s.items), args.window, args.max_session_items).fit(  # noqa: E731
        [s.seqs[i] for i in idx], s.item_category
    )
    weights, grid = {"covisitation": 1.0, "popularity": 0.3}, []
    if len(val):
        m_val = fit(train)
        # Dense scores: a capped validation sample keeps tuning memory bounded.
        weights, grid = tune_blend(m_val, s, val[:5000], args.k)
    full = fit(np.r_[train, np.setdiff1d(np.arange(len(s.seqs)), np.r_[train, test])])
    per = evaluate(full, s, test, args.k, weights)
    base = per[BASELINE][0]
    results = {
        name: MethodResult(
            bootstrap_ci(h, args.n_boot, seed=args.seed),
            bootstrap_ci(rr, args.n_boot, seed=args.seed),
            paired_bootstrap_ci(h, base, args.n_boot, seed=args.seed),
        )
        for name, (h, rr) in per.items()
    }
    folder = run_dir(args.out_dir, "sessions")
    body = {
        "kind": "sessions",
        "args": args,
        "sessions": {"all": len(s.seqs), "train": len(train), "val": len(val), "test": len(test)},
        "items": len(s.items),
        "has_category": s.item_category is not None,
        "blend_weights": weights,
        "validation_grid": grid,
        "test": results,
        "wall_seconds": time.time() - t0,
    }
    write_json(folder / "report.json", body)
    return {**body, "folder": folder}


def main(argv: list[str] | None = None) -> dict:
    args = parse_dataclass(SessionArgs, argv, "python -m training.sessions", __doc__)
    if bool(args.csv) == bool(args.sim_dir):
        raise SystemExit("give exactly one of --csv FILE or --sim-dir FOLDER")
    df = load_csv(args.csv) if args.csv else load_sim(args.sim_dir)
    res = run(df, args)
    print(f"sessions {res['sessions']}  items {res['items']}  report {res['folder']}")
    for name, r in res["test"].items():
        print(
            f"  {name:18s} recall@{args.k} {r.recall}  mrr@{args.k} {r.mrr}"
            f"  x popularity {r.recall_ratio_to_popularity}"
        )
    return res


if __name__ == "__main__":
    main()
