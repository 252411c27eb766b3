"""The intent job's arguments, each field with its help (`python -m training.intent --help`).

Apart from the job so that the modules it calls (training.intent_cv) can name them without
importing the job.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.cli import arg
from training.intent_data import SPLIT_SEED, TEST_FRAC, VAL_FRAC


@dataclass
class IntentTrainArgs:
    out_dir: str = arg("runs", "folder for the run's report and TensorBoard logs")
    csv: str | None = arg(None, "labelled queries CSV (query,intent,category) instead of the DB")
    weak_labels: bool = arg(False, "try weak labels from search sessions (kept only if they help)")
    max_len: int = arg(32, "tokens per query")
    batch_size: int = arg(32, "fine-tune batch size")
    epochs: int = arg(4, "fine-tune epochs (more when --min-steps asks for more)")
    min_steps: int = arg(
        300, "fine-tune optimiser steps at least, however small the set; 0 = --epochs alone"
    )
    layer_decay: float = arg(
        1.0, "learning-rate factor per encoder layer below the heads (1 = one rate for all)"
    )
    lr_grid: tuple[float, ...] = arg((5e-5,), "comma list of fine-tune learning rates to try")
    weight_decay: float = arg(0.01, "AdamW weight decay")
    warmup_frac: float = arg(0.1, "share of steps with linear learning-rate warm-up")
    label_smoothing: float = arg(0.1, "label smoothing of the intent loss")
    category_weight: float = arg(1.0, "weight of the category head's loss")
    patience: int = arg(2, "evaluations without improvement before stopping")
    eval_every: int = arg(0, "steps between validations; 0 = about ten a run, at most one an epoch")
    max_steps: int = arg(0, "stop after this many optimiser steps; 0 = no cap")
    grad_clip: float = arg(1.0, "gradient norm clip")
    val_frac: float = arg(VAL_FRAC, "share of queries for validation (model selection)")
    test_frac: float = arg(TEST_FRAC, "share of queries for the test report")
    seed: int = arg(SPLIT_SEED, "random seed")
    device: str = arg("auto", "auto, cpu, cuda or cuda:N")
    tensorboard: bool = arg(True, "write TensorBoard logs under the run folder")
    save_model: bool = arg(False, "put the validation winner in the BentoML model store")
    setfit_pairs: int = arg(10, "SetFit: query pairs drawn per labelled query")
    setfit_max_pairs: int = arg(8000, "SetFit: cap on the pairs (its optimiser steps x batch)")
    setfit_lr: float = arg(2e-5, "SetFit: the encoder's learning rate")
    candidates: tuple[str, ...] = arg(
        ("tfidf_lr", "embed_lr", "hybrid", "finetune", "ensemble"),
        "comma list of models to train and compare",
    )
    cv_below: int = arg(
        2000,
        "with fewer labelled queries than this the report adds a k-fold cross-validation of "
        "the candidates (one test split of a small set is noise); 0 = never",
    )
    cv_folds: int = arg(5, "folds of that cross-validation")
