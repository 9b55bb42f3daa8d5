"""RecBole 1.2.1's LightGCN on MovieLens-100K, for `bench_pretrain_cf.py` to compare against.

Runs in a throwaway virtualenv that has RecBole (it is not a ReRec dependency):

    python3 -m venv /tmp/recbole-venv
    /tmp/recbole-venv/bin/pip install torch==2.13.0 "numpy<2" "scipy==1.11.4" "pandas<2" \
        "setuptools<70" recbole==1.2.1
    /tmp/recbole-venv/bin/python benchmarks/recbole_lightgcn.py DATA_DIR OUT.json [SEED]

(RecBole 1.2.1 needs scipy < 1.12 for dok_matrix._update, pandas < 2 for its in-place fillna,
and setuptools' pkg_resources for ray.)

DATA_DIR holds ml-100k/ml-100k.{inter,item,user} (the fetched artifact's files). Prints nothing
useful itself; writes per-epoch training seconds and the best model's valid/test metrics.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time

import torch

# RecBole 1.2.1 reloads its own best checkpoint (written moments earlier by this process) with
# torch.load, which since torch 2.6 refuses the pickled config inside unless told otherwise.
# The file is RecBole's, from this run, in a temporary folder: not outside data.
_load = torch.load
torch.load = lambda *a, **k: _load(*a, **{**k, "weights_only": False})

from recbole.quick_start import run_recbole  # noqa: E402


class EpochTimes(logging.Handler):
    pattern = re.compile(r"epoch (\d+) training \[time: ([\d.]+)s")

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = self.pattern.search(re.sub(r"\x1b\[[0-9;]*m", "", record.getMessage()))
        if m:
            self.seconds.append(float(m.group(2)))


def main() -> None:
    data_dir, out = sys.argv[1], sys.argv[2]
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 2020
    handler = EpochTimes()
    # RecBole's init_logger uses logging.basicConfig, which leaves a root logger that already
    # has a handler alone: so set the level it would have set.
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    started = time.perf_counter()
    result = run_recbole(
        model="LightGCN",
        dataset="ml-100k",
        config_dict={
            "data_path": data_dir,
            "checkpoint_dir": f"{data_dir}/saved",
            "use_gpu": False,
            "seed": seed,
            "reproducibility": True,
            "show_progress": False,
            "embedding_size": 64,
            "n_layers": 2,
            "learning_rate": 1e-3,
            "train_batch_size": 2048,
            "reg_weight": 1e-4,
            "epochs": 300,
            "stopping_step": 10,
            "eval_step": 1,
            "eval_args": {
                "split": {"RS": [0.8, 0.1, 0.1]},
                "group_by": "user",
                "order": "RO",
                "mode": "full",
            },
            "metrics": ["Recall", "NDCG", "Hit", "MRR", "Precision"],
            "topk": [10, 20],
            "valid_metric": "NDCG@10",
            "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1},
            "worker": 0,
        },
    )
    with open(out, "w") as f:
        json.dump(
            {
                "epoch_train_seconds": handler.seconds,
                "wall_seconds": time.perf_counter() - started,
                "valid": {k: float(v) for k, v in result["best_valid_result"].items()},
                "test": {k: float(v) for k, v in result["test_result"].items()},
                "threads": torch.get_num_threads(),
            },
            f,
            indent=1,
        )


if __name__ == "__main__":
    main()
