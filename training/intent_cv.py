"""Intent models on a small labelled query set, judged by repeated stratified splits.

    python -m training.intent_cv --csv queries.csv                 # query,label (or intent)
    python -m training.intent_cv --csv queries.csv --repeats 2 --candidates tfidf_lr,hybrid

One 15% test split of a 250-query set is ~37 queries: its macro-F1 moves by .1 between seeds.
So each of --repeats x --folds stratified folds (split by distinct query text) is a test set
once; inside the rest, a stratified --val-frac tunes every candidate's C and picks the
validation winner, exactly as the intent job does. The report gives each candidate's test
macro-F1 as a mean with a t interval over folds, the validation winner's (what would ship),
and how much each perturbation (typos, dropped words, casing, transliteration) costs the
winner on the test folds.

Candidates: tfidf_lr (the job's baseline, C tuned), embed_lr (frozen MiniLM + LR at C=1, the
job's old setting), embed_lr_tuned, hybrid, setfit (see training.intent_fewshot), and finetune
(the intent job's classifier fine-tune, `training.intent_finetune`, for --finetune-steps
optimiser steps with early stopping on the fold's validation part).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from training.cli import arg, parse_dataclass
from training.common import minilm_path, pick_device, run_dir, write_json
from training.intent_args import IntentTrainArgs
from training.intent_fewshot import (
    C_GRID,
    SetFitArgs,
    contrastive_finetune,
    lexical_tfidf,
    tune_c,
)
from training.intent_finetune import finetune, plan_steps
from training.intent_model import IntentPredictor, embed, hybrid_matrix, load_encoder
from training.metrics import Interval, macro_f1, t_interval
from training.perturb import PERTURBATIONS, perturb_all

ALL = ("tfidf_lr", "embed_lr", "embed_lr_tuned", "hybrid", "setfit", "finetune")


@dataclass
class IntentCVArgs:
    csv: str = arg(help="CSV with query and label (or intent) columns")
    folds: int = arg(5, "stratified folds per repeat")
    repeats: int = arg(1, "repeats of the k-fold with different shuffles")
    val_frac: float = arg(0.15, "share of each training part that tunes C and picks the winner")
    candidates: tuple[str, ...] = arg(ALL, "candidates to compare")
    setfit_pairs: int = arg(10, "SetFit pairs drawn per query")
    setfit_max_pairs: int = arg(8000, "cap on SetFit pairs per fold")
    setfit_lr: float = arg(2e-5, "SetFit encoder learning rate")
    finetune_steps: int = arg(300, "optimiser steps of the classifier fine-tune per fold")
    finetune_lr: float = arg(5e-5, "learning rate of the classifier fine-tune")
    max_len: int = arg(32, "tokens per query")
    seed: int = arg(0, "split and training seed")
    device: str = arg("auto", "torch device for SetFit (auto: CUDA when there is one)")
    out_dir: str = arg("runs", "where the run folder goes")


def load_queries(path: str) -> pd.DataFrame:
    df = pd.read_csv(path)
    if "label" not in df and "intent" in df:
        df = df.rename(columns={"intent": "label"})
    if not {"query", "label"} <= set(df.columns):
        raise SystemExit(f"{path}: need columns query and label (or intent)")
    return load_frame(df)


def load_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Queries and labels as the folds need them: stripped, non-empty, one row per text."""
    df = df.dropna(subset=["query", "label"])
    df["query"] = df["query"].astype(str).str.strip()
    df["label"] = df["label"].astype(str)
    return df[df["query"] != ""].drop_duplicates("query").reset_index(drop=True)


def folds(labels: np.ndarray, n_folds: int, repeats: int, seed: int):
    """(repeat, fold, train index, test index); classes too small to stratify go to train."""
    from sklearn.model_selection import StratifiedKFold  # heavy import, training only

    counts = pd.Series(labels).value_counts()
    ok = np.isin(labels, counts[counts >= n_folds].index)
    idx_ok, idx_rare = np.flatnonzero(ok), np.flatnonzero(~ok)
    for r in range(repeats):
        skf = StratifiedKFold(n_folds, shuffle=True, random_state=seed + r)
        for f, (tr, te) in enumerate(skf.split(idx_ok, labels[idx_ok])):
            yield r, f, np.r_[idx_ok[tr], idx_rare], idx_ok[te]


def _val_split(labels: np.ndarray, idx: np.ndarray, frac: float, seed: int):
    # scikit-learn is heavy to import: only the jobs that fit it pay for it.
    from sklearn.model_selection import train_test_split

    counts = pd.Series(labels[idx]).value_counts()
    strat = labels[idx] if counts.min() >= 2 else None
    return train_test_split(idx, test_size=frac, random_state=seed, stratify=strat)


@dataclass
class FoldResult:
    val: dict[str, float]
    test: dict[str, float]
    winner: str
    c: dict[str, float]
    robustness: dict[str, float] = field(default_factory=dict)  # winner, perturbed test
    setfit: dict | None = None  # pairs, steps, seconds, losses of the contrastive fine-tune


class _Frozen:
    """MiniLM embeddings of every string the run needs, computed once."""

    def __init__(self, texts: list[str], max_len: int):
        self.encoder, self.tokenizer = load_encoder(minilm_path())
        self.max_len = max_len
        self.cache: dict[str, np.ndarray] = {}
        self.add(texts)

    def add(self, texts):
        new = sorted({t for t in texts if t not in self.cache})
        if new:
            for t, v in zip(new, embed(self.encoder, self.tokenizer, new, self.max_len)):
                self.cache[t] = v

    def __call__(self, texts) -> np.ndarray:
        self.add(texts)
        return np.stack([self.cache[t] for t in texts])


def run_fold(
    df, tr, va, te, args: IntentCVArgs, frozen: _Frozen, device, job: IntentTrainArgs
) -> FoldResult:
    q, y = df["query"].to_numpy(), df["label"].to_numpy()
    labels = sorted(set(y))
    pert = {k: perturb_all(q[te], k, args.seed) for k in PERTURBATIONS}
    predictors, c, setfit_stats = {}, {}, None
    want = set(args.candidates)
    if "tfidf_lr" in want:
        vec = lexical_tfidf(q[tr])
        head = tune_c(vec.transform(q[tr]), y[tr], vec.transform(q[va]), y[va], seed=args.seed)
        predictors["tfidf_lr"] = lambda t, vec=vec, m=head.model: m.predict(vec.transform(t))
        c["tfidf_lr"] = head.c
    if want & {"embed_lr", "embed_lr_tuned"}:
        for name, grid in (("embed_lr", (1.0,)), ("embed_lr_tuned", C_GRID)):
            if name in want:
                head = tune_c(frozen(q[tr]), y[tr], frozen(q[va]), y[va], grid, args.seed)
                predictors[name] = lambda t, m=head.model: m.predict(frozen(list(t)))
                c[name] = head.c
    if "hybrid" in want:
        vec = lexical_tfidf(q[tr])

        def hx(t, vec=vec):
            return hybrid_matrix(vec, t, frozen(list(t)))

        head = tune_c(hx(q[tr]), y[tr], hx(q[va]), y[va], seed=args.seed)
        predictors["hybrid"] = lambda t, m=head.model, hx=hx: m.predict(hx(t))
        c["hybrid"] = head.c
    if "setfit" in want:
        enc, tok = load_encoder(minilm_path())
        sf = SetFitArgs(
            args.setfit_pairs,
            args.setfit_max_pairs,
            lr=args.setfit_lr,
            max_len=args.max_len,
            seed=args.seed,
        )
        setfit_stats = contrastive_finetune(enc, tok, list(q[tr]), y[tr], sf, device)

        def sx(t, enc=enc, tok=tok):
            return embed(enc, tok, list(t), args.max_len)

        head = tune_c(sx(q[tr]), y[tr], sx(q[va]), y[va], seed=args.seed)
        predictors["setfit"] = lambda t, m=head.model, sx=sx: m.predict(sx(t))
        c["setfit"] = head.c
    if "finetune" in want:
        predictors["finetune"] = _finetuned(q, y, tr, va, labels, args, device, job)
    val = {n: macro_f1(y[va], p(q[va]), labels) for n, p in predictors.items()}
    test = {n: macro_f1(y[te], p(q[te]), labels) for n, p in predictors.items()}
    winner = max(val, key=val.get)
    rob = {k: macro_f1(y[te], predictors[winner](np.array(v)), labels) for k, v in pert.items()}
    return FoldResult(val, test, winner, c, rob, setfit_stats)


def _finetuned(q, y, tr, va, labels: list, args: IntentCVArgs, device, job: IntentTrainArgs):
    """The intent job's fine-tune on one fold (intent head only), as a predict function:
    `job`'s settings (batch size, schedule, decay) for exactly args.finetune_steps steps."""
    job = replace(
        job,
        max_len=args.max_len,
        min_steps=args.finetune_steps,
        max_steps=args.finetune_steps,
        lr_grid=(args.finetune_lr,),
        seed=args.seed,
        tensorboard=False,
    )

    def frame(idx):
        return pd.DataFrame({"query": q[idx], "intent": y[idx], "category": None})

    net, tok, _, _ = finetune(
        job, args.finetune_lr, frame(tr), frame(va), labels, [], device, None, "cv"
    )
    pred = IntentPredictor("finetune", labels, [], args.max_len, net.to("cpu"), tok)
    names = np.array(labels, dtype=object)
    return lambda t: names[pred.predict_proba(list(t))[0].argmax(1)]


@dataclass
class Summary:
    test: dict[str, Interval]
    shipped: Interval  # the validation winner's test macro-F1 per fold
    winners: dict[str, int]
    robustness: dict[str, Interval]  # the winner's test macro-F1 under each perturbation


def summarise(results: list[FoldResult]) -> Summary:
    names = results[0].test.keys()
    return Summary(
        {n: t_interval([r.test[n] for r in results]) for n in names},
        t_interval([r.test[r.winner] for r in results]),
        pd.Series([r.winner for r in results]).value_counts().to_dict(),
        {k: t_interval([r.robustness[k] for r in results]) for k in results[0].robustness},
    )


def run(df: pd.DataFrame, args: IntentCVArgs, job: IntentTrainArgs | None = None) -> dict:
    """Every fold of every repeat; `job` (the intent job's arguments, defaults when None)
    sets the fine-tune's batch size, schedule and decay."""
    job = job or IntentTrainArgs()
    t0 = time.time()
    unknown = set(args.candidates) - set(ALL)
    if unknown:
        raise SystemExit(f"unknown candidate(s) {sorted(unknown)}; choose from {list(ALL)}")
    y = df["label"].to_numpy()
    device = pick_device(args.device)
    frozen = _Frozen(df["query"].tolist(), args.max_len)
    splits = list(folds(y, args.folds, args.repeats, args.seed))
    results = []
    for r, f, tr_all, te in tqdm(splits, desc="intent folds"):
        tr, va = _val_split(y, tr_all, args.val_frac, args.seed + 97 * r + f)
        results.append(run_fold(df, tr, va, te, args, frozen, device, job))
    summary = summarise(results)
    folder = run_dir(args.out_dir, "intent_cv")
    body = {
        "kind": "intent_cv",
        "args": args,
        "data": {"queries": len(df), "classes": int(df["label"].nunique())},
        "summary": summary,
        "folds": results,
        "device": str(device),
        "wall_seconds": time.time() - t0,
    }
    write_json(folder / "report.json", body)
    return {**body, "folder": folder}


# The intent job's candidate names, as this module calls them (the job's embed_lr tunes C).
JOB_CANDIDATES = {
    "tfidf_lr": "tfidf_lr",
    "embed_lr": "embed_lr_tuned",
    "hybrid": "hybrid",
    "setfit": "setfit",
    "finetune": "finetune",
}


def for_intent_job(data: pd.DataFrame, job: IntentTrainArgs) -> dict | None:
    """The cross-validation the intent job adds to its report for a small labelled set (fewer
    than job.cv_below distinct queries): job.cv_folds stratified folds over the job's own
    candidates (the ensemble has no counterpart here), with its C grids, SetFit settings and
    the number of fine-tune steps its schedule would give a fold. None for a large set."""
    if job.cv_below <= 0 or job.cv_folds < 2:
        return None
    df = load_frame(data.rename(columns={"intent": "label"}))
    if len(df) >= job.cv_below:
        return None
    fold_train = int(len(df) * (1 - 1 / job.cv_folds) * (1 - job.val_frac))
    args = IntentCVArgs(
        csv="",
        folds=job.cv_folds,
        val_frac=job.val_frac,
        candidates=tuple(JOB_CANDIDATES[c] for c in job.candidates if c in JOB_CANDIDATES),
        setfit_pairs=job.setfit_pairs,
        setfit_max_pairs=job.setfit_max_pairs,
        setfit_lr=job.setfit_lr,
        finetune_steps=plan_steps(fold_train, job).total,
        finetune_lr=job.lr_grid[0],
        max_len=job.max_len,
        seed=job.seed,
        device=job.device,
        out_dir=job.out_dir,
    )
    res = run(df, args, job)
    return {
        "folds": job.cv_folds,
        "data": res["data"],
        "summary": res["summary"],
        "report": str(res["folder"] / "report.json"),  # every fold's figures
    }


def main(argv: list[str] | None = None) -> dict:
    args = parse_dataclass(IntentCVArgs, argv, "python -m training.intent_cv", __doc__)
    res = run(load_queries(args.csv), args)
    s = res["summary"]
    print(f"{res['data']}  report {res['folder']}")
    for name, ci in s.test.items():
        print(f"  {name:15s} test macro-F1 {ci}")
    print(f"  shipped (validation winner) {s.shipped}  winners {s.winners}")
    for k, ci in s.robustness.items():
        print(f"  winner under {k:13s} {ci}")
    return res


if __name__ == "__main__":
    main()
