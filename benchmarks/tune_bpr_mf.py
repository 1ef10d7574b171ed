"""Tunes BPR-MF on a dataset's validation set, then reports the best on test.

    python benchmarks/tune_bpr_mf.py --data-dir ../shared/data \
        [--dataset ncf-ml-1m] [--dims 64,128] [--learning-rates 1e-3,3e-3] \
        [--l2s 1e-5,1e-4] [--epochs 40] [--patience 4] [--eval-every 2] \
        [--seed 0] [--out tune_bpr_mf.json]

Rendle et al. (RecSys 2020) found that a well-tuned dot-product model
matches NeuMF on NCF's ML-1M files. This runs every combination of the grid
with the dataset's `bpr_mf` entry (its protocol, batches and optimizer),
keeps each run's best epoch by validation HR@10 (evaluated every
`--eval-every` epochs, stopped after `--patience` evaluations without
improvement; the `ncf-ml-1m` entry itself uses patience 3), picks the
combination with the best validation HR@10 and only then evaluates it on the
test set, under the entry's protocol and views. The JSON written to `--out`
holds every run's validation curve, the chosen hyperparameters, the test
metrics, the data checksum and package versions.
"""

from __future__ import annotations

import argparse
import itertools
import time

import keras_rec  # noqa: F401
from keras_rec.configs import select
from keras_rec.configs.baselines import bpr_mf
from keras_rec.data import load_dataset, make_split
from keras_rec.evaluation import evaluate
from keras_rec.training.results import atomic_write_json, package_versions
from keras_rec.training.trainer import train_model

MONITOR = "hr@10"


def _floats(text: str) -> list[float]:
    return [float(value) for value in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="ncf-ml-1m")
    parser.add_argument("--dims", default="64,128")
    parser.add_argument("--learning-rates", default="1e-3,3e-3")
    parser.add_argument("--l2s", default="1e-5,1e-4")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=4)
    parser.add_argument("--eval-every", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="tune_bpr_mf.json")
    args = parser.parse_args()

    (entry,) = select(["bpr_mf"], [args.dataset])
    dataset = load_dataset(args.dataset, args.data_dir)
    split = make_split(dataset, entry.protocol, args.seed, **entry.split_options)
    if split.validation is None:
        raise SystemExit(
            f"{args.dataset}'s {entry.protocol} split has no validation set"
        )
    grid = list(
        itertools.product(
            [int(d) for d in args.dims.split(",")],
            _floats(args.learning_rates),
            _floats(args.l2s),
        )
    )
    print(
        f"{args.dataset}: {len(grid)} combinations, up to {args.epochs} epochs, "
        f"validation {MONITOR} on {len(split.validation)} users"
    )
    print(
        f"{'dim':>5} {'lr':>8} {'l2':>8} {'epoch':>6} {'val ' + MONITOR:>11} {'s':>7}"
    )
    runs = []
    for dim, learning_rate, l2 in grid:
        begin = time.perf_counter()
        training = train_model(
            bpr_mf(dim, learning_rate, l2)(split, args.seed),
            lambda epoch: entry.make_dataset(split, args.seed, epoch),
            args.epochs,
            evaluate=lambda m: evaluate(m, split.validation, entry.protocol),
            eval_every=args.eval_every,
            monitor=MONITOR,
            patience=args.patience,
            progress=False,
        )
        run = {
            "embedding_dim": dim,
            "learning_rate": learning_rate,
            "l2": l2,
            "best": training.best,
            "epochs_run": training.epochs_run,
            "seconds": time.perf_counter() - begin,
            "curve": training.curve,
            "model": training.model,
        }
        runs.append(run)
        print(
            f"{dim:>5} {learning_rate:>8g} {l2:>8g} {training.best['epoch']:>6} "
            f"{training.best['value']:>11.4f} {run['seconds']:>7.0f}",
            flush=True,
        )
    chosen = max(runs, key=lambda run: run["best"]["value"])
    model = chosen.pop("model")
    test = {
        protocol: evaluate(model, split.test, protocol)
        for protocol in (entry.protocol, *entry.views)
    }
    print(
        f"chosen: dim {chosen['embedding_dim']}, lr {chosen['learning_rate']:g}, "
        f"l2 {chosen['l2']:g}, epoch {chosen['best']['epoch']}"
    )
    for protocol, metrics in test.items():
        shown = ", ".join(
            f"{k}={v:.4f}" for k, v in metrics.items() if "@" in k and k.endswith("10")
        )
        print(f"test {protocol}: {shown}")
    for run in runs:
        run.pop("model", None)
    atomic_write_json(
        args.out,
        {
            "command": "benchmarks/tune_bpr_mf.py",
            "arguments": vars(args),
            "entry": entry.record(),
            "dataset_checksum_sha256": dataset.checksum(),
            "versions": package_versions(),
            "runs": runs,
            "chosen": chosen,
            "test": test,
        },
    )
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
