"""Mult-VAE and RecVAE against Mult-DAE by user activity (is the ordering the data?).

    python benchmarks/vae_vs_dae.py --data-dir ../shared/data [--dataset ml-1m]

Liang et al. (WWW 2018, Figure 3) find Mult-VAE's edge over Mult-DAE comes
from the users with the fewest clicks; on users with long histories the two
are level or Mult-DAE is ahead. ML-1M keeps only users with 20 or more
ratings (median about 96), so the paper's ordering need not hold there.

This trains, per seed, the `--variants` of the `strong_generalization`
entries of `keras_rec.configs` (best validation NDCG@100 epoch): the paper's
Mult-VAE (`vae`), the same network with `beta = 0` (`vae-beta0`: no KL term,
the sampled code and the deeper network without the prior), Mult-VAE
without its 600-wide hidden layers (`vae-shallow`: Mult-DAE's I-200-I shape
with the VAE's code and prior), the paper's Mult-DAE (`dae`), the paper's
RecVAE (`recvae`) and RecVAE with its five 600-wide encoder layers
narrowed to 200 (`recvae-narrow`: the same depth, dense connections,
composite prior and alternating phases), with four times its KL weight
(`recvae-gamma4x`: `beta' = 4 gamma |x_u|`, for data whose users have
fewer items than ML-20M's) or with Mult-DAE's L2 penalty on its kernels
(`recvae-l2`; the paper's RecVAE has none). Each is
evaluated on the test users split into quartiles of their fold-in history
length (each seed's bounds are printed; the table averages quartile by quartile), so one can see where the gap comes from.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import keras_rec  # noqa: F401
from keras_rec.configs import select
from keras_rec.configs.autoencoders import MONITOR, mult_vae
from keras_rec.configs.autoencoders_recvae_vasp import recvae
from keras_rec.data import load_dataset, make_split
from keras_rec.evaluation import evaluate
from keras_rec.training.trainer import train_model

METRICS = ("recall@20", "recall@50", "ndcg@100")


def _train(experiment, build, split, seed, epochs, name, checkpoints=None):
    result = train_model(
        build(split, seed),
        lambda epoch: experiment.make_dataset(split, seed, epoch),
        epochs or experiment.epochs,
        checkpoint_dir=checkpoints,
        evaluate=lambda m: evaluate(m, split.validation, experiment.protocol),
        eval_every=experiment.eval_every,
        monitor=MONITOR,
        patience=experiment.patience,
        progress=False,
    )
    curve = ", ".join(
        f"{point['epoch']}: {point[MONITOR]:.4f}"
        for point in result.curve
        if MONITOR in point
    )
    print(
        f"seed {seed} {name}: {result.epochs_run} epochs, validation {MONITOR} "
        f"{curve}; kept epoch {result.best['epoch'] if result.best else 'last'}",
        flush=True,
    )
    return result.model


def _batch(entry) -> dict:
    return {"batch_size": entry.hyperparameters["batch_size"]}


def _schedule(entry) -> dict:
    """The entry's batch size and KL annealing, for a variant of its model."""
    keys = ("anneal_cap", "anneal_epochs", "total_anneal_steps")
    chosen = {
        key: entry.hyperparameters[key] for key in keys if key in entry.hyperparameters
    }
    return {**_batch(entry), **chosen}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, help="override the entries' epochs")
    parser.add_argument(
        "--checkpoints-dir",
        help="checkpoint each run under DIR/<variant>_seed<S> (its state.json "
        "holds the validation curve so far); the same command resumes it",
    )
    parser.add_argument(
        "--variants",
        type=lambda text: text.split(","),
        default=["vae", "vae-beta0", "dae"],
        help="comma-separated, from: vae, vae-beta0, vae-shallow (Mult-VAE "
        "without its 600-wide hidden layers, Mult-DAE's shape), dae, recvae, "
        "recvae-narrow (RecVAE's encoder layers 200 wide instead of 600), "
        "recvae-gamma4x (RecVAE with 4 x its gamma), recvae-l2 (RecVAE with "
        "Mult-DAE's L2 on its kernels)",
    )
    args = parser.parse_args()

    (vae,) = select(["mult_vae"], [args.dataset])
    (dae,) = select(["mult_dae"], [args.dataset])
    (rec,) = select(["recvae"], [args.dataset])
    variants = {
        "vae": ("Mult-VAE", vae, vae.build),
        "vae-beta0": (
            "Mult-VAE beta=0",
            vae,
            mult_vae(anneal_cap=0.0, total_anneal_steps=0, **_batch(vae)),
        ),
        "vae-shallow": (
            "Mult-VAE I-200-I",
            vae,
            mult_vae(hidden_dims=(), **_schedule(vae)),
        ),
        "dae": ("Mult-DAE", dae, dae.build),
        "recvae": ("RecVAE", rec, rec.build),
        "recvae-narrow": (
            "RecVAE hidden 200",
            rec,
            recvae(rec.hyperparameters["learning_rate"], hidden_dim=200),
        ),
        "recvae-gamma4x": (
            "RecVAE 4 x gamma",
            rec,
            recvae(
                rec.hyperparameters["learning_rate"],
                gamma=4 * rec.hyperparameters["gamma"],
            ),
        ),
        "recvae-l2": (
            "RecVAE with L2",
            rec,
            recvae(rec.hyperparameters["learning_rate"], l2=dae.hyperparameters["l2"]),
        ),
    }
    unknown = sorted(set(args.variants) - set(variants))
    if unknown:
        raise SystemExit(
            f"unknown --variants {unknown}; choose from {sorted(variants)}"
        )
    variants = {variants[key][0]: (key, *variants[key][1:]) for key in args.variants}
    dataset = load_dataset(args.dataset, args.data_dir)
    rows = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        split = make_split(dataset, vae.protocol, seed, **vae.split_options)
        lengths = np.array([len(h) for h in split.test.histories])
        edges = np.quantile(lengths, [0.25, 0.5, 0.75])
        bucket = np.searchsorted(edges, lengths, side="right")
        subsets = {"all": split.test}
        for q in range(4):
            members = np.flatnonzero(bucket == q)
            if not members.size:  # tied quantiles: equal edges leave it empty
                raise SystemExit(
                    f"seed {seed}: quartile Q{q + 1} has no test user (history "
                    f"length edges {edges.tolist()} tie); use more held-out users"
                )
            low, high = lengths[members].min(), lengths[members].max()
            subsets[f"Q{q + 1}"] = split.test.take(members)
            print(
                f"seed {seed} Q{q + 1}: {len(members)} test users, {low}-{high} items"
            )
        for name, (key, experiment, build) in variants.items():
            checkpoints = args.checkpoints_dir and os.path.join(
                args.checkpoints_dir, f"{key}_seed{seed}"
            )
            model = _train(
                experiment, build, split, seed, args.epochs, name, checkpoints
            )
            for label, subset in subsets.items():
                result = evaluate(model, subset, vae.protocol)
                rows.append((seed, name, label, [result[m] for m in METRICS]))
                print(
                    f"seed {seed} {name:16s} {label:4s} "
                    + " ".join(f"{m}={result[m]:.4f}" for m in METRICS),
                    flush=True,
                )
    print(f"\n{args.dataset}: mean over seeds {args.seeds}")
    print(f"| model | test users | {' | '.join(METRICS)} |")
    print("|" + " --- |" * (2 + len(METRICS)))
    for name in variants:
        for label in dict.fromkeys(r[2] for r in rows if r[1] == name):
            values = np.mean([r[3] for r in rows if r[1] == name and r[2] == label], 0)
            print(
                f"| {name} | {label} | " + " | ".join(f"{v:.4f}" for v in values) + " |"
            )


if __name__ == "__main__":
    main()
