"""What limits the ranker on simulated data: ceilings measured on the ranker job's own frame.

    python -m training.ranker_ceiling --frame runs/ranker-.../frame.parquet \
        --truth data/sim/truth/impressions.parquet [--out ceiling.json]

Same time split as the ranker job (whole lists, earliest to training, latest to test). On the
test split's logged clicks it reports AUC with list-bootstrap intervals for:

    oracle                 the simulator's p_click (includes the slot's examination term)
    oracle_position_free   p_click_position_free: the click model without the slot
    features_to_oracle     LightGBM regression of logit(p_click_position_free) on the ranker's
                           features, fitted on the training split: the best a function of these
                           features does when it is taught the noise-free target. The gap
                           between it and the position-free oracle is what the features do not
                           carry; the gap between it and the models is what learning from
                           clicks (few, noisy and position-biased) costs.
    lightgbm_clicks        LightGBM classifier on the same features, taught the logged clicks
    features_to_oracle_r2  R^2 of that regression on the test split (logit scale)

and the same two with one feature more, `query_category_match`: whether the item's category
is the category most shown for the list's query in the training split (a query-item
relevance no ranker feature service carries; the simulator's click model has such a term).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from features.frames import read_frame, read_frame_info
from training.ranker import RankerTrainArgs
from training.ranker_data import numeric_objects, time_split
from training.ranker_eval import auc_intervals
from training.ranker_model import FeatureSpec


@dataclass
class CeilingArgs:
    frame: str
    truth: str
    out: str | None = None
    exclude: str = RankerTrainArgs.exclude
    val_frac: float = 0.15
    test_frac: float = 0.15
    rounds: int = 400
    n_boot: int = 200
    seed: int = 0


def _matrix(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    x = frame[spec.dense].astype(float).copy()
    for c in spec.sparse:  # ids and categories as LightGBM categoricals
        x[c] = frame[c].astype("category")
    return x


def query_match(splits: dict[str, pd.DataFrame], part: str) -> np.ndarray:
    """1.0 when the item's category is the one most shown for the list's query in the
    training split, 0.0 when not, NaN without a query (recommendation lists)."""
    train, frame = splits["train"], splits[part]
    if "query" not in train:
        return np.full(len(frame), np.nan)
    cat = "category" if "category" in train else "item_category"
    searched = train[train["query"].notna()]
    top = searched.groupby("query")[cat].agg(
        lambda s: s.mode().iloc[0] if s.notna().any() else None
    )
    want = frame["query"].map(top)
    out = (want == frame[cat]).astype(float).to_numpy()
    out[want.isna().to_numpy()] = np.nan
    return out


def run(args: CeilingArgs) -> dict:
    import lightgbm as lgb  # heavy import, only this analysis needs it

    t0 = time.time()
    frame = numeric_objects(read_frame(args.frame))
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    truth = pd.read_parquet(args.truth)[["event_id", "p_click", "p_click_position_free"]]
    frame = frame.merge(truth, on="event_id", how="inner", suffixes=("_frame", ""))
    splits, _ = time_split(frame, args.val_frac, args.test_frac)
    info = read_frame_info(args.frame)
    excluded = {c for c in args.exclude.split(",") if c}
    names = None if info is None else [n for n in info.features if n not in excluded]
    spec = FeatureSpec.discover(
        splits["train"].drop(columns=list(excluded & set(frame.columns))), 2, names
    )
    spec.sparse = [c for c in spec.sparse if splits["train"][c].nunique() < 20_000]
    cats = {
        c: pd.api.types.union_categoricals(
            [splits[k][c].astype(str).astype("category") for k in splits]
        ).categories
        for c in spec.sparse
    }

    def x(part):
        m = _matrix(part, spec)
        for c in spec.sparse:
            m[c] = pd.Categorical(part[c].astype(str), categories=cats[c])
        return m

    xs = {k: x(v) for k, v in splits.items()}
    free = {k: splits[k]["p_click_position_free"].clip(1e-6, 1 - 1e-6) for k in splits}
    logit = {k: np.log(v / (1 - v)) for k, v in free.items()}
    labels = {k: splits[k]["label"] for k in splits}
    params = dict(learning_rate=0.05, num_leaves=63, min_child_samples=50, verbose=-1)

    def fit(objective, target, features):
        model = lgb.train(
            {**params, "objective": objective, "seed": args.seed},
            lgb.Dataset(features["train"], target["train"]),
            args.rounds,
            valid_sets=[lgb.Dataset(features["val"], target["val"])],
            callbacks=[lgb.early_stopping(30, verbose=False)],
        )
        return model.predict(features["test"], num_iteration=model.best_iteration), model

    test = splits["test"]
    scores = {
        "oracle": test["p_click"].to_numpy(),
        "oracle_position_free": free["test"].to_numpy(),
    }
    r2, rounds = {}, {}
    with_match = {k: v.assign(query_category_match=query_match(splits, k)) for k, v in xs.items()}
    for suffix, features in (("", xs), ("_query_match", with_match)):
        pred, reg = fit("regression", logit, features)
        resid = logit["test"].to_numpy() - pred
        r2["features" + suffix] = float(1 - resid.var() / logit["test"].to_numpy().var())
        scores["features" + suffix + "_to_oracle"] = pred
        scores["lightgbm_clicks" + suffix], clf = fit("binary", labels, features)
        rounds["features" + suffix] = {
            "regression": reg.best_iteration,
            "clicks": clf.best_iteration,
        }
    ci = auc_intervals(
        test["label"].to_numpy(),
        scores,
        test["list_id"].to_numpy(),
        oracle="oracle_position_free",
        n_boot=args.n_boot,
        seed=args.seed,
    )
    out = {
        "args": asdict(args),
        "rows": {k: len(v) for k, v in splits.items()},
        "test_click_rate": float(test["label"].mean()),
        "features": {"dense": len(spec.dense), "categorical": spec.sparse},
        "features_to_oracle_r2": r2["features"],
        "features_query_match_to_oracle_r2": r2["features_query_match"],
        "query_category_match_share": float(with_match["test"]["query_category_match"].mean()),
        "auc": {k: {m: asdict(iv) for m, iv in v.items()} for k, v in ci.items()},
        "lightgbm_rounds": rounds,
        "seconds": time.time() - t0,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2, default=str)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m training.ranker_ceiling", description=__doc__)
    p.add_argument("--frame", required=True, help="the ranker job's frame.parquet")
    p.add_argument("--truth", required=True, help="the simulator's truth/impressions.parquet")
    p.add_argument("--out", default=None, help="write the result as JSON here (default: none)")
    p.add_argument("--rounds", type=int, default=400, help="LightGBM rounds (default 400)")
    p.add_argument("--n-boot", type=int, default=200, help="bootstrap resamples (default 200)")
    p.add_argument(
        "--exclude",
        default=CeilingArgs.exclude,
        help="comma list of frame columns not used as features, as the ranker job's flag "
        f"(default: {CeilingArgs.exclude}); e.g. add ranker_v3's query_category_share,"
        "query_top_category_match to measure the ceiling without them",
    )
    ns = p.parse_args(argv)
    out = run(
        CeilingArgs(
            ns.frame, ns.truth, ns.out, exclude=ns.exclude, rounds=ns.rounds, n_boot=ns.n_boot
        )
    )
    r2, r2q = out["features_to_oracle_r2"], out["features_query_match_to_oracle_r2"]
    print(
        f"test rows {out['rows']['test']}  R^2 features -> oracle logit {r2:.4f}, "
        f"with the query match {r2q:.4f}"
    )
    for k, v in out["auc"].items():
        print(
            f"  {k:22s} "
            + "  ".join(
                f"{m} {d['mean']:.4f} [{d['low']:.4f}, {d['high']:.4f}]" for m, d in v.items()
            )
        )
    return out


if __name__ == "__main__":
    main()
