"""The ranker job's arguments, each field with its help (`python -m training.ranker --help`).

Apart from the job so that the modules it calls (training.ranker_fit) can name them without
importing the job.
"""

from __future__ import annotations

from dataclasses import dataclass

from training.bundles import RANKER_FEATURE_SERVICE
from training.cli import arg


@dataclass
class RankerTrainArgs:
    frame: str | None = arg(None, "Parquet training frame to train on (from features.frames)")
    feast: str | None = arg(
        None,
        "build the frame from Feast; optional repo path (default: feature_repo/)",
        nargs="?",
        const="",
        metavar="REPO_PATH",
    )
    feature_service: str = arg(
        RANKER_FEATURE_SERVICE, "Feast feature service: the model's train/serve contract"
    )
    start: str | None = arg(None, "label window start, ISO (default: first impression)")
    end: str | None = arg(None, "label window end, ISO (default: last impression)")
    list_sample: float = arg(1.0, "share of request lists kept, chosen by a hash of list_id")
    # Absolute epoch seconds: under a time split every test value lies beyond the training
    # range, so the net would extrapolate on them; their useful part (recency, item age) is
    # already in seconds_since_last_activity and item_age_days.
    exclude: str = arg(
        "last_event_ts_s,item_listed_at_s", "comma list of frame columns not used as features"
    )
    position_bias: bool = arg(False, "learn a per-position logit offset, dropped at inference")
    truth: str | None = arg(
        None, "simulator truth impressions.parquet: adds the oracle AUCs to the report"
    )
    out_dir: str = arg("runs", "folder for the run's report, frame and TensorBoard logs")
    buckets: int = arg(2**15, "hash buckets per sparse feature")
    emb_dim: int = arg(16, "embedding width of each sparse feature")
    cross_layers: int = arg(3, "DCN-v2 cross layers")
    deep: str = arg("256,128", "comma list of the deep tower's layer widths")
    dropout: float = arg(0.1, "dropout in the deep tower")
    lr: float = arg(1e-3, "AdamW learning rate")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    batch_size: int = arg(512, "training batch size per process")
    epochs: int = arg(10, "passes over the training split (early stopping may end sooner)")
    patience: int = arg(2, "epochs without validation log-loss gain before stopping")
    max_steps: int = arg(0, "stop after this many optimiser steps; 0 = no cap")
    val_frac: float = arg(0.15, "share of lists (by time) for validation")
    test_frac: float = arg(0.15, "share of lists (latest) for the test report")
    seed: int = arg(0, "random seed")
    device: str = arg("auto", "auto, cpu, cuda or cuda:N")
    tensorboard: bool = arg(True, "write TensorBoard logs under the run folder")
    save_model: bool = arg(False, "put the ranker in the BentoML model store")
    min_gain: float = arg(
        0.0,
        "the DCN-v2 ships only if its validation AUC beats logistic regression's by more "
        "than this, also at the 90% lower bound over resampled validation lists; otherwise "
        "the regression ships (the same RankerBundle)",
    )
    n_boot: int = arg(200, "list-bootstrap resamples of the test intervals (0: none)")
