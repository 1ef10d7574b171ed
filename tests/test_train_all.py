import fcntl
import hashlib
import itertools
import json
import math
import os
import shlex
import threading
import time
import types

import numpy as np
import pytest

import train_all
from keras_rec.data import datasets, load_dataset, make_split, make_synthetic
from keras_rec.evaluation import evaluate
from keras_rec.models import Popularity
from keras_rec.training import trainer
from keras_rec.training.results import onednn_enabled


def _read(path):
    with open(path) as handle:
        return json.load(handle)


def _args(tmp_path, *extra):
    return [
        "--results-dir",
        str(tmp_path / "results"),
        "--checkpoints-dir",
        str(tmp_path / "checkpoints"),
        "--saved-models-dir",
        str(tmp_path / "saved_models"),
        "--quiet",
        *extra,
    ]


def test_default_run_writes_results_table_and_exports(tmp_path, monkeypatch, capsys):
    # Two models keep the test short; the README's main command runs them all.
    code = train_all.main(
        _args(tmp_path, "--epochs", "2", "--models", "popularity,bpr_mf")
    )
    assert code == 0
    _check_default_run(tmp_path)
    # A redone run whose export fails its parity check leaves the previous
    # export and results as they were, and says why.
    exported = tmp_path / "saved_models" / "popularity_synthetic"

    def snapshot():  # same bytes, and the same files: not rewritten
        return {
            path: (path.read_bytes(), path.stat().st_ino, path.stat().st_mtime_ns)
            for path in exported.rglob("*")
            if path.is_file()
        }

    before = snapshot()
    record = tmp_path / "results" / "popularity_synthetic_seed0.json"
    old_record = record.read_bytes()

    def failing_parity(*args, **kwargs):
        raise AssertionError("top-k ids differ")

    monkeypatch.setattr(train_all, "export_parity", failing_parity)
    assert train_all.main(_args(tmp_path, "--models", "popularity", "--force")) == 1
    assert snapshot() == before and record.read_bytes() == old_record
    assert not list((tmp_path / "saved_models").glob(".*staging*"))
    err = capsys.readouterr().err
    assert "top-k ids differ" in err and "[popularity_synthetic_seed0] FAILED" in err
    # A stale staging folder is swept, and a good export replaces the old one.
    (tmp_path / "saved_models" / ".popularity_synthetic.staging-old").mkdir()
    monkeypatch.undo()
    assert train_all.main(_args(tmp_path, "--models", "popularity", "--force")) == 0
    after = snapshot()
    assert set(after) == set(before)
    assert all(after[path][1:] != before[path][1:] for path in before)  # new files
    assert not list((tmp_path / "saved_models").glob(".*staging*"))


def test_a_failed_export_keeps_the_trained_checkpoint(tmp_path, monkeypatch, capsys):
    # Training finished, the export check failed: no results yet, but the
    # checkpoint stays, and running again evaluates it without training.
    def failing_parity(*args, **kwargs):
        raise AssertionError("top-k ids differ")

    monkeypatch.setattr(train_all, "export_parity", failing_parity)
    args = _args(tmp_path, "--models", "bpr_mf", "--epochs", "1")
    assert train_all.main(args) == 1
    err = capsys.readouterr().err
    assert "[bpr_mf_synthetic_seed0] its checkpoint is kept in" in err
    assert not (tmp_path / "results" / "bpr_mf_synthetic_seed0.json").exists()
    assert train_all.main([*args, "--no-export"]) == 0
    record = _read(tmp_path / "results" / "bpr_mf_synthetic_seed0.json")
    assert record["resumed_from_epoch"] == 1 and record["epochs_run"] == 1


def test_a_missing_data_file_fails_its_runs_only(tmp_path, capsys):
    # ml-100k's file is not in the (empty) data folder; the synthetic run
    # is still made and the table still written.
    empty = tmp_path / "data"
    empty.mkdir()
    args = _args(tmp_path, "--models", "popularity", "--no-export")
    args += ["--datasets", "ml-100k,synthetic", "--data-dir", str(empty)]
    assert train_all.main(args) == 1
    err = capsys.readouterr().err
    assert "[popularity_ml-100k_seed0] FAILED:" in err and "u.data" in err
    assert (tmp_path / "results" / "popularity_synthetic_seed0.json").exists()
    assert "popularity" in (tmp_path / "results" / "RESULTS.md").read_text()


def test_a_finished_run_that_cannot_be_checked_fails_alone(
    tmp_path, monkeypatch, capsys
):
    # Its results file damaged, or its data gone (its split cannot be
    # checked): that run is reported, the others are still made.
    args = _args(tmp_path, "--models", "popularity,ease", "--no-export")
    assert train_all.main(args) == 0
    (tmp_path / "results" / "popularity_synthetic_seed0.json").write_text('{"run": ')
    assert train_all.main(args) == 1
    err = capsys.readouterr().err
    assert "[popularity_synthetic_seed0] FAILED: its earlier results" in err
    assert "JSONDecodeError" in err

    def gone(name, data_dir=None):
        raise FileNotFoundError(f"no {name} data in {data_dir}")

    monkeypatch.setattr(train_all, "load_dataset", gone)
    assert train_all.main(args) == 1
    err = capsys.readouterr().err
    assert "[ease_synthetic_seed0] FAILED: its earlier results" in err
    assert "no synthetic data" in err
    assert (tmp_path / "results" / "RESULTS.md").exists()


def _check_default_run(tmp_path):
    results = tmp_path / "results"
    for name in ("popularity_synthetic_seed0", "bpr_mf_synthetic_seed0"):
        with open(results / f"{name}.json") as handle:
            record = json.load(handle)
        assert record["seed"] == 0
        assert len(record["dataset"]["checksum_sha256"]) == 64
        assert len(record["dataset"]["split_sha256"]) == 64
        assert "tensorflow" in " ".join(record["versions"])
        assert record["onednn"] is onednn_enabled()
        assert set(record["metrics"]) == {"loo_sampled", "loo_full"}
        assert 0.0 <= record["metrics"]["loo_sampled"]["hr@10"] <= 1.0
        assert record["config"]["model"] in name
        exported = tmp_path / "saved_models" / name.replace("_seed0", "")
        assert (exported / "1" / "saved_model.pb").exists()
        assert (exported / "model.tflite").exists()
        assert (exported / "model.keras").exists()
        assert record["exported"]["tflite"] == os.path.abspath(
            exported / "model.tflite"
        )
        parity = record["exported"]["parity"]
        for runtime in ("saved_model_cli", "litert"):
            assert parity[runtime]["max_abs_score_diff"] < 1e-4
    # The recorded metrics are the test set's, recomputed here from the
    # public API (popularity is deterministic).
    split = make_split(load_dataset("synthetic"), "loo_sampled", 0)
    model = Popularity(split.num_items).fit_closed_form(split.train)
    record = _read(results / "popularity_synthetic_seed0.json")
    for protocol in ("loo_sampled", "loo_full"):
        expected = evaluate(model, split.test, protocol)
        recorded = record["metrics"][protocol]
        assert {"hr@10", "ndcg@10", "num_users"} <= set(expected)
        for name, value in expected.items():
            if name != "seconds":
                assert recorded[name] == pytest.approx(value, abs=1e-9), name
    table = (results / "RESULTS.md").read_text()
    assert "| bpr_mf | synthetic | loo_sampled | hr@10 |" in table


def test_a_run_that_raises_does_not_stop_the_others(tmp_path, monkeypatch, capsys):
    run_one = train_all.run_one

    def failing(experiment, seed, dataset, args):
        if experiment.name.startswith("popularity"):
            raise RuntimeError("a bug in one run")
        return run_one(experiment, seed, dataset, args)

    monkeypatch.setattr(train_all, "run_one", failing)
    args = _args(tmp_path, "--models", "popularity,ease", "--no-export")
    assert train_all.main(args) == 1
    results = tmp_path / "results"
    assert (results / "ease_synthetic_seed0.json").exists()
    assert not (results / "popularity_synthetic_seed0.json").exists()
    assert (results / "RESULTS.md").exists()
    err = capsys.readouterr().err
    assert "a bug in one run" in err
    assert "failed runs: ['popularity_synthetic_seed0']" in err


def test_seeds_get_their_own_splits_and_are_averaged_first_one_exported(tmp_path):
    args = _args(tmp_path, "--models", "popularity", "--seeds", "0,1")
    assert train_all.main(args) == 0
    results = tmp_path / "results"
    records = [_read(results / f"popularity_synthetic_seed{s}.json") for s in (0, 1)]
    assert [r["seed"] for r in records] == [0, 1]
    assert (
        records[0]["dataset"]["split_sha256"] != records[1]["dataset"]["split_sha256"]
    )
    assert isinstance(records[0]["exported"], dict)
    # Seed 1's model is not exported over seed 0's, and its record says so.
    assert records[1]["exported"].startswith("skipped: ")
    assert "holds popularity_synthetic_seed0's model" in records[1]["exported"]
    values = [r["metrics"]["loo_sampled"]["hr@10"] for r in records]
    table = (results / "RESULTS.md").read_text()
    mean = f"{sum(values) / 2:.4f}"
    assert f"| popularity | synthetic | loo_sampled | hr@10 | {mean} ± " in table
    row = next(line for line in table.splitlines() if "| loo_sampled | hr@10 |" in line)
    assert "(2)" in row


def test_under_several_workers_a_failed_run_stops_them_all(tmp_path, monkeypatch):
    # One worker going on to the next run alone would desynchronise the
    # cluster's collectives: every error is raised.
    class Workers:  # stands for a MultiWorkerMirroredStrategy
        pass

    def failing(*args):
        raise ValueError("bad data on one worker")

    monkeypatch.setattr(train_all.tf.distribute, "MultiWorkerMirroredStrategy", Workers)
    monkeypatch.setattr(train_all, "make_strategy", lambda name: Workers())
    monkeypatch.setattr(train_all, "run_one", failing)
    with pytest.raises(ValueError, match="bad data on one worker"):
        train_all.main(_args(tmp_path, "--models", "popularity,ease", "--no-export"))


def test_a_worker_that_is_not_the_chief_trains_but_writes_nothing(
    tmp_path, monkeypatch, capsys
):
    # One writer per cluster: another worker trains and evaluates the same
    # runs (the collectives need it) but leaves results, checkpoints,
    # exports and the table to the chief.
    def run(folder):
        options = (
            "--models",
            "popularity,bpr_mf",
            "--epochs",
            "2",
            "--eval-every",
            "1",
        )
        assert train_all.main(_args(tmp_path / folder, *options)) == 0
        return capsys.readouterr().out

    # The chief writes the results, their curve plot, the checkpoint BPR-MF
    # keeps (NGCF pre-trains from it) and the exports ...
    run("chief")
    written = {p.name for p in (tmp_path / "chief").rglob("*") if p.is_file()}
    assert {"bpr_mf_synthetic_seed0.json", "RESULTS.md", "state.json"} <= written
    assert "bpr_mf_synthetic_seed0_curve.png" in written
    # ... and another worker none of them.
    monkeypatch.setattr(train_all, "is_chief", lambda strategy: False)
    monkeypatch.setattr(trainer, "is_chief", lambda strategy: False)
    out = run("worker")
    assert "[bpr_mf_synthetic_seed0] hr@10=" in out and "table:" not in out
    assert not (tmp_path / "worker").exists()


def test_finished_runs_are_not_redone(tmp_path, capsys):
    args = _args(tmp_path, "--models", "popularity", "--no-export")
    assert train_all.main(args) == 0
    path = tmp_path / "results" / "popularity_synthetic_seed0.json"
    stamp = os.path.getmtime(path)
    assert train_all.main(args) == 0
    assert os.path.getmtime(path) == stamp
    assert "finished earlier" in capsys.readouterr().out


@pytest.fixture
def small_synthetic(monkeypatch):
    """The built-in dataset at 300 of its 1,000 users (its 26,140
    interactions shrink to 7,826; 400 items leave every user the 100
    unseen ones `loo_sampled` draws): for tests of the run logic."""
    small = datasets.Dataset("synthetic", make_synthetic(300, 400))
    monkeypatch.setitem(datasets.LOADERS, "synthetic", lambda data_dir: small)


@pytest.fixture
def slow_clock(monkeypatch):
    """The trainer's clock reads 10 s more at every look: with a 15 s budget
    the first epoch starts (10 s spent) and the second does not (30 s)."""
    ticks = itertools.count(step=10.0)
    clock = types.SimpleNamespace(perf_counter=lambda: float(next(ticks)))
    monkeypatch.setattr(trainer, "time", clock)


@pytest.mark.usefixtures("slow_clock")
def test_a_run_stopped_by_its_time_budget_goes_on_later(tmp_path, capsys):
    args = _args(tmp_path, "--models", "bpr_mf", "--epochs", "2", "--no-export")
    path = tmp_path / "results" / "bpr_mf_synthetic_seed0.json"
    state = tmp_path / "checkpoints" / "bpr_mf_synthetic_seed0" / "main" / "state.json"

    def record():
        with open(path) as handle:
            return json.load(handle)

    assert train_all.main([*args, "--time-budget", "15"]) == 0
    first = record()
    assert first["stopped_by"] == "time_budget" and first["epochs_run"] == 1
    assert state.exists()  # kept, so that the run can go on
    assert "checkpoint kept" in capsys.readouterr().out
    assert (
        "bpr_mf_synthetic_seed0 (1 of 2 epochs)"
        in (tmp_path / "results" / "RESULTS.md").read_text()
    )

    # The same budget is spent already: nothing is retrained or rewritten.
    stamp = os.path.getmtime(path)
    assert train_all.main([*args, "--time-budget", "15"]) == 0
    assert os.path.getmtime(path) == stamp
    assert "pass a larger --time-budget" in capsys.readouterr().out

    # Without a budget it continues from epoch 1 to the end, then finishes.
    assert train_all.main(args) == 0
    second = record()
    assert second["resumed_from_epoch"] == 1 and second["epochs_run"] == 2
    assert second["stopped_by"] == "epochs"
    assert second["losses"][0] == first["losses"][0]
    # Finished, its checkpoint stays: ngcf_mf trains from it (a run that no
    # entry pre-trains from removes its own, see the NeuMF test).
    assert json.loads(state.read_text())["epoch"] == 2
    assert "(1 of 2 epochs)" not in (tmp_path / "results" / "RESULTS.md").read_text()


@pytest.mark.usefixtures("slow_clock", "small_synthetic")
def test_force_redoes_a_budget_stopped_run_from_scratch(tmp_path):
    args = _args(tmp_path, "--models", "bpr_mf", "--epochs", "2", "--no-export")
    path = tmp_path / "results" / "bpr_mf_synthetic_seed0.json"

    def resumed_from():
        with open(path) as handle:
            return json.load(handle)["resumed_from_epoch"]

    assert train_all.main([*args, "--time-budget", "15"]) == 0
    assert train_all.main([*args, "--force"]) == 0
    assert resumed_from() == 0
    # An interrupted run (a checkpoint, no results yet) still resumes.
    assert train_all.main([*args, "--force", "--time-budget", "15"]) == 0
    os.remove(path)
    assert train_all.main([*args, "--force"]) == 0
    assert resumed_from() == 1


@pytest.mark.usefixtures("small_synthetic")
def test_force_retrains_a_pretraining_part(tmp_path):
    # GMF keeps its checkpoint after it finishes (NeuMF starts from it);
    # `--force` must still train it again rather than reload it.
    args = _args(
        tmp_path, "--models", "gmf", "--epochs", "1", "--no-export", "--no-xla"
    )
    state = tmp_path / "checkpoints" / "gmf_synthetic_seed0" / "main" / "state.json"
    assert train_all.main(args) == 0
    assert state.exists()
    assert train_all.main([*args, "--force"]) == 0
    with open(tmp_path / "results" / "gmf_synthetic_seed0.json") as handle:
        record = json.load(handle)
    assert record["resumed_from_epoch"] == 0 and record["epochs_run"] == 1
    assert state.exists()


def test_eval_every_sets_the_curve_points(tmp_path):
    args = _args(tmp_path, "--models", "bpr_mf", "--epochs", "4", "--no-export")
    assert train_all.main([*args, "--eval-every", "2"]) == 0
    with open(tmp_path / "results" / "bpr_mf_synthetic_seed0.json") as handle:
        record = json.load(handle)
    assert [point["epoch"] for point in record["curve"]] == [2, 4]
    assert record["eval_every"] == 2
    with pytest.raises(ValueError, match="--eval-every must be at least 1"):
        train_all.main([*args, "--eval-every", "0"])


def test_unknown_model_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Unknown model 'nope'"):
        train_all.main(_args(tmp_path, "--models", "nope"))


def _listed(capsys, *flags) -> set[tuple[str, str]]:
    assert train_all.main(["--list", *flags]) == 0
    return {tuple(line.split()[:2]) for line in capsys.readouterr().out.splitlines()}


def test_list_shows_the_named_models_and_datasets(capsys):
    every = _listed(capsys)
    assert ("ngcf", "gowalla") in every and ("sasrec", "games") in every
    assert {dataset for _, dataset in every} > {"synthetic", "gowalla"}
    ngcf = _listed(capsys, "--models", "ngcf")
    assert ngcf == {e for e in every if e[0] == "ngcf"}
    assert ("ngcf", "gowalla") in ngcf and ("ngcf", "synthetic") in ngcf
    gowalla = _listed(capsys, "--datasets", "gowalla")
    assert gowalla == {e for e in every if e[1] == "gowalla"}
    both = _listed(capsys, "--models", "ngcf,lightgcn", "--datasets", "gowalla")
    assert both == {("ngcf", "gowalla"), ("lightgcn", "gowalla")}
    with pytest.raises(ValueError, match="Unknown model 'nope'"):
        train_all.main(["--list", "--models", "nope"])
    with pytest.raises(ValueError, match="Unknown dataset 'nope'"):
        train_all.main(["--list", "--datasets", "nope"])


@pytest.mark.usefixtures("small_synthetic")
def test_neumf_pretrains_from_the_gmf_and_mlp_runs(tmp_path):
    # GMF and MLP run first and keep their checkpoints; NeuMF's pre-training
    # resumes them (finished) instead of training them a second time. The
    # parts train without XLA (`--no-xla`, quicker on tiny data), NeuMF with
    # it, as its entry asks; a part's checkpoint does not depend on it.
    args = _args(tmp_path, "--epochs", "1", "--no-export")
    assert train_all.main([*args, "--models", "gmf,mlp", "--no-xla"]) == 0
    checkpoints = tmp_path / "checkpoints"
    states = [
        checkpoints / f"{m}_synthetic_seed0" / "main" / "state.json"
        for m in ("gmf", "mlp")
    ]
    stamps = [os.path.getmtime(state) for state in states]
    assert train_all.main([*args, "--models", "neumf"]) == 0
    assert [os.path.getmtime(state) for state in states] == stamps
    with open(tmp_path / "results" / "gmf_synthetic_seed0.json") as handle:
        gmf = json.load(handle)
    assert gmf["best_epoch"] is None and gmf["curve_on"] == "validation"
    assert gmf["jit_compile"] is False
    with open(tmp_path / "results" / "neumf_synthetic_seed0.json") as handle:
        record = json.load(handle)
    assert record["epochs_run"] == 1 and record["jit_compile"] is True
    # The pre-trained start is evaluated on validation (epoch 0) and can be
    # the epoch kept.
    assert [point["epoch"] for point in record["curve"]] == [0, 1]
    assert record["curve_on"] == "validation"
    assert record["best_epoch"]["epoch"] in (0, 1)
    # NeuMF's own checkpoints are removed once its results are written.
    assert not (checkpoints / "neumf_synthetic_seed0").exists()


@pytest.mark.usefixtures("small_synthetic")
def test_ngcf_mf_starts_from_the_bpr_mf_run(tmp_path):
    # The reference code's --pretrain -1: the bpr_mf run (kept, not redone)
    # gives NGCF's ego embeddings, and the start is evaluated (epoch 0).
    args = _args(tmp_path, "--epochs", "1", "--no-export")
    assert train_all.main([*args, "--models", "bpr_mf"]) == 0
    state = tmp_path / "checkpoints" / "bpr_mf_synthetic_seed0" / "main" / "state.json"
    stamp = os.path.getmtime(state)
    assert train_all.main([*args, "--models", "ngcf_mf"]) == 0
    assert os.path.getmtime(state) == stamp
    record = _read(tmp_path / "results" / "ngcf_mf_synthetic_seed0.json")
    mf = _read(tmp_path / "results" / "bpr_mf_synthetic_seed0.json")
    hyper = record["config"]["hyperparameters"]
    assert hyper["pretrain"] == "bpr_mf"
    assert hyper["pretrain_hyperparameters"] == mf["config"]["hyperparameters"]
    assert record["pretrained_parts"]["bpr_mf"]["epochs_run"] == 1
    assert [point["epoch"] for point in record["curve"]] == [0, 1]


def test_experiment_names_are_unique():
    # A run's results file and checkpoints are named by model and dataset.
    from keras_rec import configs

    names = [e.name for e in configs.EXPERIMENTS]
    assert len(names) == len(set(names))


def test_a_time_budget_that_is_not_positive_is_refused(tmp_path):
    # `--time-budget 0` used to train 0 epochs and write the untrained
    # model's metrics as the run's results.
    for budget in ("0", "-1"):
        with pytest.raises(ValueError, match="--time-budget must be a positive"):
            train_all.main(
                _args(tmp_path, "--models", "bpr_mf", "--time-budget", budget)
            )
    assert not (tmp_path / "results").exists()


@pytest.mark.usefixtures("slow_clock")
def test_a_run_its_budget_stopped_before_the_first_epoch_is_trained_later(
    tmp_path, capsys
):
    args = _args(tmp_path, "--models", "bpr_mf", "--epochs", "2")
    path = tmp_path / "results" / "bpr_mf_synthetic_seed0.json"
    # 10 s pass before the first epoch could start: none runs, and the
    # untrained model is not exported.
    assert train_all.main([*args, "--time-budget", "5"]) == 0
    with open(path) as handle:
        first = json.load(handle)
    assert first["stopped_by"] == "time_budget" and first["epochs_run"] == 0
    assert first["exported"].startswith("skipped: stopped by the time budget")
    assert not (tmp_path / "saved_models" / "bpr_mf_synthetic").exists()
    args.append("--no-export")
    assert "before its first epoch" in capsys.readouterr().out
    # No checkpoint was written, yet the run is not "finished earlier".
    assert train_all.main(args) == 0
    assert "finished earlier" not in capsys.readouterr().out
    with open(path) as handle:
        second = json.load(handle)
    assert second["stopped_by"] == "epochs" and second["epochs_run"] == 2


@pytest.mark.usefixtures("small_synthetic")
def test_a_finished_run_with_another_configuration_is_named(tmp_path, capsys):
    args = _args(tmp_path, "--models", "bpr_mf", "--no-export", "--epochs", "1")
    assert train_all.main(args) == 0
    assert train_all.main([*args, "--epochs", "3"]) == 0
    out = capsys.readouterr().out
    assert "finished earlier with another configuration" in out
    assert "epochs_requested: 1 then, 3 now" in out and "--force" in out


def test_a_finished_run_on_another_split_is_named(tmp_path, capsys):
    args = _args(tmp_path, "--models", "popularity", "--no-export")
    path = tmp_path / "results" / "popularity_synthetic_seed0.json"
    assert train_all.main(args) == 0
    assert train_all.main(args) == 0
    assert "finished earlier: " in capsys.readouterr().out
    # As if the splitting code had changed since the run.
    record = json.loads(path.read_text())
    record["dataset"]["split_sha256"] = "0" * 64
    path.write_text(json.dumps(record))
    assert train_all.main(args) == 0
    out = capsys.readouterr().out
    assert "finished earlier with another configuration" in out
    assert "split: 000000000000... then" in out and "--force" in out
    # A record written before the split checksum existed is not second-guessed.
    del record["dataset"]["split_sha256"]
    path.write_text(json.dumps(record))
    assert train_all.main(args) == 0
    assert "finished earlier: " in capsys.readouterr().out


def _record(seed, epochs, learning_rate, hr):
    return {
        "run": f"bpr_mf_synthetic_seed{seed}",
        "seed": seed,
        "epochs_requested": epochs,
        "epochs_run": epochs,
        "eval_every": 1,
        "config": {
            "model": "bpr_mf",
            "dataset": "synthetic",
            "protocol": "loo_sampled",
            "views": [],
            "paper": {},
            "epochs": 20,
            "hyperparameters": {"learning_rate": learning_rate},
        },
        "metrics": {"loo_sampled": {"hr@10": hr, "num_users": 10, "seconds": 1.0}},
        "seconds_per_epoch": 1.0,
    }


def test_results_table_does_not_average_different_configurations(tmp_path):
    # Seeds 0 and 1 share a config and are averaged; seed 7 is an old
    # `--epochs 1` run with another learning rate, not a third seed.
    records = [_record(0, 20, 5e-3, 0.6), _record(1, 20, 5e-3, 0.4)]
    records.append(_record(7, 1, 0.1, 0.1))
    for record in records:
        with open(tmp_path / f"{record['run']}.json", "w") as handle:
            json.dump(record, handle)
    table = open(train_all.write_table(str(tmp_path))).read()
    assert "| bpr_mf [a] | synthetic | loo_sampled | hr@10 | 0.5000 ± 0.1000 (2) |" in (
        table
    )
    assert "| bpr_mf [b] | synthetic | loo_sampled | hr@10 | 0.1000 ± 0.0000 (1) |" in (
        table
    )
    assert "(3)" not in table
    assert "- bpr_mf [b] on synthetic:" in table
    assert "epochs_requested=1" in table and "learning_rate=0.1" in table


def test_other_json_files_in_the_results_folder_are_named_not_fatal(tmp_path, capsys):
    record = _record(0, 20, 5e-3, 0.6)
    with open(tmp_path / f"{record['run']}.json", "w") as handle:
        json.dump(record, handle)
    (tmp_path / "tune.json").write_text('{"trials": []}')
    (tmp_path / "typed.json").write_text(json.dumps({**record, "metrics": []}))
    (tmp_path / "cut.json").write_text('{"run": "x", "metr')
    table = open(train_all.write_table(str(tmp_path))).read()
    assert "| bpr_mf | synthetic | loo_sampled | hr@10 | 0.6000" in table
    assert "tune.json (ValueError: no run, metrics, seconds_per_epoch, config)" in table
    assert "cut.json (JSONDecodeError" in table
    assert "typed.json (ValueError: `metrics` is not a mapping" in table
    assert "tune.json" in capsys.readouterr().err


def test_partial_runs_are_not_averaged_with_finished_ones(tmp_path):
    # Seed 2 stopped by its time budget after 1 of 20 epochs: its own row.
    partial = {**_record(2, 20, 5e-3, 0.1), "epochs_run": 1}
    partial["stopped_by"] = "time_budget"
    for record in (_record(0, 20, 5e-3, 0.6), _record(1, 20, 5e-3, 0.4), partial):
        with open(tmp_path / f"{record['run']}.json", "w") as handle:
            json.dump(record, handle)
    table = open(train_all.write_table(str(tmp_path))).read()
    assert "| bpr_mf | synthetic | loo_sampled | hr@10 | 0.5000 ± 0.1000 (2) |" in table
    row = "| bpr_mf (partial, 1 epochs) | synthetic | loo_sampled | hr@10 | 0.1000"
    assert row in table
    assert "bpr_mf_synthetic_seed2 (1 of 20 epochs)" in table
    # Another seed stopped after another number of epochs: its own row.
    later = {**partial, "run": "bpr_mf_synthetic_seed3", "seed": 3, "epochs_run": 9}
    (tmp_path / "bpr_mf_synthetic_seed3.json").write_text(json.dumps(later))
    table = open(train_all.write_table(str(tmp_path))).read()
    assert row in table and "| bpr_mf (partial, 9 epochs) |" in table
    assert "not averaged" not in table  # one configuration: no [a], [b]


def test_one_configuration_has_unlabelled_rows(tmp_path):
    for record in (_record(0, 20, 5e-3, 0.6), _record(1, 20, 5e-3, 0.4)):
        with open(tmp_path / f"{record['run']}.json", "w") as handle:
            json.dump(record, handle)
    table = open(train_all.write_table(str(tmp_path))).read()
    assert "| bpr_mf | synthetic | loo_sampled | hr@10 | 0.5000 ± 0.1000 (2) |" in table
    assert "not averaged" not in table


@pytest.mark.parametrize(
    "extra, message",
    [
        # sasrec has no Gowalla entry: it used to be dropped without a word.
        (
            ["--models", "bpr_mf,sasrec", "--datasets", "gowalla"],
            r"Model 'sasrec' has no entry on the requested datasets \['gowalla'\]; "
            r"it has entries on \[.*'synthetic'",
        ),
        (["--seeds", ","], "--seeds names nothing"),
        (["--seeds", ""], "--seeds names nothing"),
        (["--models", ""], "--models names nothing"),
        (["--models", " , "], "--models names nothing"),
        (["--datasets", ""], "--datasets names nothing"),
    ],
)
def test_a_selection_that_runs_less_than_asked_is_an_error(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        train_all.main(_args(tmp_path, *extra))
    assert not (tmp_path / "results").exists()


@pytest.mark.usefixtures("slow_clock", "small_synthetic")
def test_neumf_waits_for_the_parts_its_time_budget_stopped(tmp_path, capsys):
    # The budget stops GMF and MLP after one of their two epochs: NeuMF is
    # not trained from them (a later run would otherwise resume a NeuMF
    # built from parts that have trained on since), and the next run
    # without a budget finishes the parts, then trains NeuMF.
    args = _args(
        tmp_path, "--epochs", "2", "--no-export", "--models", "neumf", "--no-xla"
    )
    path = tmp_path / "results" / "neumf_synthetic_seed0.json"
    assert train_all.main([*args, "--time-budget", "15"]) == 0
    first = _read(path)
    assert first["stopped_by"] == "time_budget" and first["epochs_run"] == 0
    assert {
        name: part["stopped_by"] for name, part in first["pretrained_parts"].items()
    } == {
        "gmf": "time_budget",
        "mlp": "time_budget",
    }
    assert "not trained: the time budget stopped its pre-trained part(s) gmf, mlp" in (
        capsys.readouterr().out
    )
    assert not (tmp_path / "checkpoints" / "neumf_synthetic_seed0" / "main").exists()
    assert train_all.main(args) == 0
    second = _read(path)
    assert second["stopped_by"] in ("epochs", "patience")
    assert second["epochs_run"] > 0 and second["jit_compile"] is False
    assert [part["epochs_run"] for part in second["pretrained_parts"].values()] == [
        2,
        2,
    ]
    # NeuMF run alone trains GMF and MLP with their entries' settings: the
    # reference's fixed schedule, last epoch kept (no monitor), and a
    # validation curve; NeuMF itself keeps its best epoch.
    for part in ("gmf", "mlp"):
        state_path = tmp_path / "checkpoints" / f"{part}_synthetic_seed0" / "main"
        with open(state_path / "state.json") as handle:
            state = json.load(handle)
        assert state["epoch"] == 2
        assert state["best"] is None
        assert [point["epoch"] for point in state["curve"]] == [1, 2]
    assert second["best_epoch"] is not None
    # The curve is drawn against epochs and wall time.
    assert second["curve_plot"].endswith("neumf_synthetic_seed0_curve.png")
    assert os.path.getsize(second["curve_plot"]) > 0


def test_seeds_that_are_not_integers_are_named(tmp_path):
    with pytest.raises(
        ValueError, match="--seeds takes comma-separated integers, got 'a'"
    ):
        train_all.main(_args(tmp_path, "--models", "bpr_mf", "--seeds", "0,a"))


# === Review fixes: locks, exports, records, the table ===


@pytest.fixture
def quick_export(monkeypatch):
    """Exports that write stand-ins for the SavedModel and the TFLite file
    (the seed being run and a digest of the model's weights), and no parity
    check: for tests of which run's model the export folder holds. Returns
    a function reading what the folder's SavedModel holds."""
    import keras_rec.export as export

    running = {}
    run_one = train_all.run_one

    def tracked(experiment, seed, dataset, args):
        running["seed"] = seed
        return run_one(experiment, seed, dataset, args)

    monkeypatch.setattr(train_all, "run_one", tracked)

    def digest(model):
        weights = (np.asarray(w).tobytes() for w in model.get_weights())
        return (
            f"seed {running['seed']}: " + hashlib.sha256(b"".join(weights)).hexdigest()
        )

    def saved_model(model, path, seen_items=None):
        os.makedirs(path)
        with open(os.path.join(path, "saved_model.pb"), "w") as handle:
            handle.write(digest(model))

    def tflite(model, path, seen_items=None):
        with open(path, "w") as handle:
            handle.write(digest(model))

    monkeypatch.setattr(export, "export_saved_model", saved_model)
    monkeypatch.setattr(export, "export_tflite", tflite)
    monkeypatch.setattr(train_all, "export_parity", lambda *args: {"users": 0})

    def exported(tmp_path, name="popularity_synthetic"):
        folder = tmp_path / "saved_models" / name
        return (folder / "1" / "saved_model.pb").read_text()

    return exported


def _export_info(tmp_path, name="popularity_synthetic"):
    return _read(tmp_path / "saved_models" / name / "export.json")


def test_force_leaves_a_checkpoint_another_process_trains_from(tmp_path, capsys):
    # A process training the run holds the checkpoint's lock: `--force`
    # fails the run as training it would, and removes nothing.
    args = _args(tmp_path, "--models", "popularity", "--no-export")
    assert train_all.main(args) == 0
    main = tmp_path / "checkpoints" / "popularity_synthetic_seed0" / "main"
    main.mkdir(parents=True)
    (main / "state.json").write_text('{"marker": "the holder"}')
    with trainer._checkpoint_lock(str(main), None, "holder"):
        lock = (main / ".lock").stat().st_ino
        assert train_all.main([*args, "--force"]) == 1
        err = capsys.readouterr().err
        assert "[popularity_synthetic_seed0] FAILED:" in err
        assert f"another process (pid {os.getpid()}) is training from" in err
        assert (main / "state.json").read_text() == '{"marker": "the holder"}'
        assert (main / ".lock").stat().st_ino == lock
    # Once it has ended, --force redoes the run; the folder goes with it.
    assert train_all.main([*args, "--force"]) == 0
    assert not (tmp_path / "checkpoints" / "popularity_synthetic_seed0").exists()


def test_the_export_holds_the_lowest_seed_and_records_stay_truthful(
    tmp_path, quick_export, capsys
):
    args = _args(tmp_path, "--models", "popularity")
    results = tmp_path / "results"
    assert train_all.main([*args, "--seeds", "0"]) == 0
    seed0 = quick_export(tmp_path)
    assert seed0.startswith("seed 0: ")
    # A later command's seed 1 does not replace seed 0's export.
    assert train_all.main([*args, "--seeds", "1"]) == 0
    assert quick_export(tmp_path) == seed0
    info = _export_info(tmp_path)  # which run the folder holds
    assert info["run"] == "popularity_synthetic_seed0" and info["seed"] == 0
    assert info["complete"] is True and info["partial"] is False
    record1 = _read(results / "popularity_synthetic_seed1.json")
    assert record1["exported"].startswith("skipped: ")
    assert (
        "a lower seed of this configuration; --force replaces it"
        in (record1["exported"])
    )
    assert "[popularity_synthetic_seed1] export skipped: " in capsys.readouterr().out
    assert isinstance(
        _read(results / "popularity_synthetic_seed0.json")["exported"], dict
    )
    # Only the record whose export id is the folder's describes its files.
    record0 = _read(results / "popularity_synthetic_seed0.json")
    assert record0["exported"]["export_id"] == info["export_id"]
    # --force replaces it: seed 0's record keeps its id, no longer the folder's.
    assert train_all.main([*args, "--seeds", "1", "--force"]) == 0
    seed1 = quick_export(tmp_path)
    assert seed1.startswith("seed 1: ") and _export_info(tmp_path)["seed"] == 1
    folder_id = _export_info(tmp_path)["export_id"]
    assert _read(results / "popularity_synthetic_seed0.json") == record0
    assert record0["exported"]["export_id"] != folder_id
    record1 = _read(results / "popularity_synthetic_seed1.json")
    assert record1["exported"]["export_id"] == folder_id
    # Under --force, the lowest seed of the command is the one left.
    assert train_all.main([*args, "--seeds", "1,0,2", "--force"]) == 0
    assert quick_export(tmp_path) == seed0 and _export_info(tmp_path)["seed"] == 0
    records = {
        s: _read(results / f"popularity_synthetic_seed{s}.json") for s in (0, 1, 2)
    }
    folder_id = _export_info(tmp_path)["export_id"]
    assert records[0]["exported"]["export_id"] == folder_id
    assert records[1]["exported"]["export_id"] != folder_id
    assert records[2]["exported"].startswith("skipped: ")
    assert "--force replaces it" not in records[2]["exported"]  # this command's


@pytest.mark.usefixtures("slow_clock", "small_synthetic")
def test_a_run_its_budget_stopped_does_not_replace_a_finished_export(
    tmp_path, quick_export
):
    args = _args(tmp_path, "--models", "bpr_mf", "--epochs", "2")
    results = tmp_path / "results"
    assert train_all.main([*args, "--seeds", "1"]) == 0  # finished
    finished = quick_export(tmp_path, "bpr_mf_synthetic")
    assert finished.startswith("seed 1: ")
    # Seed 0, stopped by its budget after 1 of 2 epochs, leaves it in place
    # even though its seed is lower.
    assert train_all.main([*args, "--seeds", "0", "--time-budget", "15"]) == 0
    assert quick_export(tmp_path, "bpr_mf_synthetic") == finished
    partial = _read(results / "bpr_mf_synthetic_seed0.json")
    assert partial["stopped_by"] == "time_budget" and partial["epochs_run"] == 1
    assert partial["exported"].startswith("skipped: ")
    assert "a finished run's" in partial["exported"]
    assert _export_info(tmp_path, "bpr_mf_synthetic")["seed"] == 1
    # Finished, seed 0 replaces seed 1's export; only seed 0's id matches.
    assert train_all.main([*args, "--seeds", "0"]) == 0
    assert quick_export(tmp_path, "bpr_mf_synthetic").startswith("seed 0: ")
    info = _export_info(tmp_path, "bpr_mf_synthetic")
    assert info["seed"] == 0 and info["partial"] is False
    ids = {
        seed: _read(results / f"bpr_mf_synthetic_seed{seed}.json")["exported"][
            "export_id"
        ]
        for seed in (0, 1)
    }
    assert ids[0] == info["export_id"] != ids[1]
    # Its own run redone with --force and stopped by the budget: the record
    # is replaced, so the export is too (before, it was refused and the
    # folder held a model no record described).
    assert (
        train_all.main([*args, "--seeds", "0", "--force", "--time-budget", "15"]) == 0
    )
    info = _export_info(tmp_path, "bpr_mf_synthetic")
    assert info["seed"] == 0 and info["partial"] is True
    redone = _read(results / "bpr_mf_synthetic_seed0.json")
    assert redone["stopped_by"] == "time_budget"
    assert redone["exported"]["export_id"] == info["export_id"]


def test_a_failed_move_never_leaves_a_new_savedmodel_beside_old_files(
    tmp_path, quick_export, monkeypatch, capsys
):
    from keras_rec.export import saved_model

    args = _args(tmp_path, "--models", "popularity")
    assert train_all.main(args) == 0
    folder = tmp_path / "saved_models" / "popularity_synthetic"
    files = ("1/saved_model.pb", "model.tflite", "model.keras")
    before = {name: (folder / name).stat().st_ino for name in files}
    write = saved_model.write_atomically

    def failing(name):
        def moves(path, *args, **kwargs):
            if os.path.basename(path) == name:
                raise OSError(f"no room for {name}")
            return write(path, *args, **kwargs)

        return moves

    # The first move fails: nothing is replaced, export.json is as it was.
    info = folder / "export.json"
    written = info.read_bytes() if info.exists() else None
    monkeypatch.setattr(saved_model, "write_atomically", failing("model.tflite"))
    assert train_all.main([*args, "--force"]) == 1
    assert {name: (folder / name).stat().st_ino for name in files} == before
    assert "failed before it replaced any file" in capsys.readouterr().err
    assert info.read_bytes() == written
    # A later move fails: TF Serving's folder `1` is still the old one (it
    # is moved last), and the error names what was replaced.
    monkeypatch.setattr(saved_model, "write_atomically", failing("model.keras"))
    assert train_all.main([*args, "--force"]) == 1
    err = capsys.readouterr().err
    assert "stopped midway: model.tflite now holds popularity_synthetic_seed0's" in err
    assert "model.keras, 1 still the previous export's" in err
    after = {name: (folder / name).stat().st_ino for name in files}
    assert after["1/saved_model.pb"] == before["1/saved_model.pb"]
    assert after["model.keras"] == before["model.keras"]
    assert after["model.tflite"] != before["model.tflite"]
    mixed = _export_info(tmp_path)
    assert mixed["complete"] is False
    assert mixed["parts"]["model.tflite"] == "popularity_synthetic_seed0"
    # The failed run wrote no record; the earlier one's id is not the folder's.
    record = _read(tmp_path / "results" / "popularity_synthetic_seed0.json")
    assert record["exported"]["export_id"] != mixed.get("export_id")
    # The next export replaces the mixed folder whole.
    monkeypatch.setattr(saved_model, "write_atomically", write)
    assert train_all.main([*args, "--force"]) == 0
    assert _export_info(tmp_path)["complete"] is True


def test_an_export_killed_between_its_renames_is_restored_by_the_next(
    tmp_path, quick_export
):
    # Killed after moving the served folder `1` aside: the next export of
    # the model puts it back first, even one that is refused (seed 1).
    args = _args(tmp_path, "--models", "popularity")
    assert train_all.main([*args, "--seeds", "0"]) == 0
    seed0 = quick_export(tmp_path)
    folder = tmp_path / "saved_models" / "popularity_synthetic"
    (folder / ".1.tmp-killed").mkdir()
    os.rename(folder / "1", folder / ".1.tmp-killed" / "1.old")
    with pytest.warns(UserWarning, match="interrupted"):
        assert train_all.main([*args, "--seeds", "1"]) == 0
    assert (folder / "1").is_dir() and not (folder / ".1.tmp-killed").exists()
    assert quick_export(tmp_path) == seed0


def test_a_live_exports_staging_folder_is_not_removed(tmp_path, quick_export, capsys):
    # Another process exporting the same model (its staging folder, the
    # export lock held): this run waits for it instead of deleting its files.
    saved_models = tmp_path / "saved_models"
    staging = saved_models / ".popularity_synthetic.staging-other"
    (staging / "1").mkdir(parents=True)
    (staging / "1" / "saved_model.pb").write_text("the other export")
    codes = []
    with open(saved_models / ".popularity_synthetic.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        run = threading.Thread(
            target=lambda: codes.append(
                train_all.main(_args(tmp_path, "--models", "popularity"))
            )
        )
        run.start()
        out = ""
        deadline = time.monotonic() + 300
        while run.is_alive() and "waiting for another process" not in out:
            assert time.monotonic() < deadline
            time.sleep(0.2)
            out += capsys.readouterr().out
        assert "waiting for another process" in out
        assert (staging / "1" / "saved_model.pb").read_text() == "the other export"
        fcntl.flock(lock, fcntl.LOCK_UN)
    run.join()
    assert codes == [0]
    assert _export_info(tmp_path)["run"] == "popularity_synthetic_seed0"


def test_the_record_names_the_strategy_and_gpus_and_table_keeps_them_apart(
    tmp_path, capsys
):
    args = _args(tmp_path, "--models", "popularity", "--no-export")
    assert train_all.main(args) == 0
    record = _read(tmp_path / "results" / "popularity_synthetic_seed0.json")
    assert record["strategy"] == {"name": "none", "num_replicas_in_sync": 1}
    gpus = train_all.tf.config.list_physical_devices("GPU")
    assert [gpu["device"] for gpu in record["gpus"]] == [gpu.name for gpu in gpus]
    assert train_all.main([*args, "--strategy", "mirrored", "--seeds", "1"]) == 0
    mirrored = _read(tmp_path / "results" / "popularity_synthetic_seed1.json")
    assert mirrored["strategy"]["name"] == "mirrored"
    assert mirrored["strategy"]["num_replicas_in_sync"] >= 1
    table = (tmp_path / "results" / "RESULTS.md").read_text()
    assert "| popularity [a] |" in table and "| popularity [b] |" in table
    assert "strategy.name='mirrored'" in table and "(2)" not in table
    # The finished seed 0 is another configuration under another strategy.
    capsys.readouterr()
    assert train_all.main([*args, "--strategy", "mirrored"]) == 0
    out = capsys.readouterr().out
    assert "finished earlier with another configuration" in out
    assert "strategy.name: None then, 'mirrored' now" in out


def test_records_without_a_strategy_are_averaged_with_ones_under_none(tmp_path):
    old = _record(0, 20, 5e-3, 0.6)  # written before the strategy was recorded
    new = {**_record(1, 20, 5e-3, 0.4), "strategy": {"name": "none"}}
    for record in (old, new):
        (tmp_path / f"{record['run']}.json").write_text(json.dumps(record))
    table = open(train_all.write_table(str(tmp_path))).read()
    assert "| bpr_mf | synthetic | loo_sampled | hr@10 | 0.5000 ± 0.1000 (2) |" in table


def test_the_record_command_is_the_argv_main_parsed(tmp_path):
    args = _args(tmp_path / "with space", "--models", "popularity", "--no-export")
    assert train_all.main(args) == 0
    results = tmp_path / "with space" / "results"
    record = _read(results / "popularity_synthetic_seed0.json")
    assert record["command"] == shlex.join(["train_all.py", *args])
    assert shlex.split(record["command"])[1:] == args


@pytest.mark.usefixtures("slow_clock", "small_synthetic")
def test_a_partial_run_whose_checkpoint_is_gone_is_not_called_finished(
    tmp_path, capsys
):
    args = _args(tmp_path, "--models", "bpr_mf", "--epochs", "2", "--no-export")
    path = tmp_path / "results" / "bpr_mf_synthetic_seed0.json"
    table = tmp_path / "results" / "RESULTS.md"
    assert train_all.main([*args, "--time-budget", "15"]) == 0
    assert "(run them again with a larger budget to continue)" in table.read_text()
    checkpoint = tmp_path / "checkpoints" / "bpr_mf_synthetic_seed0"
    for file in sorted(checkpoint.rglob("*"), reverse=True):
        file.rmdir() if file.is_dir() else file.unlink()
    checkpoint.rmdir()
    capsys.readouterr()
    stamp = os.path.getmtime(path)
    assert train_all.main(args) == 0
    out = capsys.readouterr().out
    assert "finished earlier" not in out
    assert "[bpr_mf_synthetic_seed0] partial (1 of 2 epochs" in out
    assert "checkpoint" in out and "is gone" in out and "--force" in out
    assert os.path.getmtime(path) == stamp
    text = table.read_text()
    assert "larger budget to continue" not in text
    assert "their checkpoints are gone, so they cannot be continued" in text
    assert "`--force` trains them again" in text
    assert "bpr_mf_synthetic_seed0 (1 of 2 epochs)" in text
    assert train_all.main([*args, "--force"]) == 0
    assert _read(path)["stopped_by"] == "epochs"


def test_records_with_damaged_metric_values_are_named_not_fatal(tmp_path, capsys):
    good = _record(0, 20, 5e-3, 0.6)
    (tmp_path / "good.json").write_text(json.dumps(good))
    damaged = {
        "text.json": {"loo_sampled": {"hr@10": "0.5"}},
        "none.json": {"loo_sampled": None},
        "bool.json": {"loo_sampled": {"hr@10": True}},
        "nan.json": {"loo_sampled": {"hr@10": math.nan}},
        "list.json": {"loo_sampled": {"hr@10": [0.5]}},
    }
    for name, metrics in damaged.items():
        (tmp_path / name).write_text(json.dumps({**good, "metrics": metrics}))
    (tmp_path / "views.json").write_text(
        json.dumps({**good, "config": {**good["config"], "views": None}})
    )
    stopped = {**good, "stopped_by": "time_budget", "epochs_run": "1"}
    (tmp_path / "epochs.json").write_text(json.dumps(stopped))
    table = open(train_all.write_table(str(tmp_path))).read()
    assert "| bpr_mf | synthetic | loo_sampled | hr@10 | 0.6000 ± 0.0000 (1) |" in table
    assert "text.json (ValueError: `metrics.loo_sampled` holds values that" in table
    assert "hr@10='0.5'" in table
    assert "none.json (ValueError: `metrics.loo_sampled` is not a mapping" in table
    for name in ("bool.json", "nan.json", "list.json", "views.json", "epochs.json"):
        assert f"{name} (ValueError: " in table
    assert "text.json" in capsys.readouterr().err


@pytest.mark.parametrize("seeds", ["-1", "0,-2"])
def test_negative_seeds_are_refused(tmp_path, seeds):
    with pytest.raises(ValueError, match="--seeds takes non-negative integers, got -"):
        train_all.main(_args(tmp_path, "--models", "popularity", "--seeds", seeds))
    assert not (tmp_path / "results").exists()


def test_closed_form_runs_ignore_epochs_and_eval_every(tmp_path, capsys):
    args = _args(tmp_path, "--models", "popularity", "--no-export")
    results = tmp_path / "results"
    assert train_all.main([*args, "--seeds", "0"]) == 0
    assert (
        train_all.main([*args, "--seeds", "1", "--epochs", "5", "--eval-every", "3"])
        == 0
    )
    for seed in (0, 1):
        record = _read(results / f"popularity_synthetic_seed{seed}.json")
        assert record["epochs_requested"] is None and record["eval_every"] is None
    table = (results / "RESULTS.md").read_text()
    assert "| popularity | synthetic | loo_sampled | hr@10 |" in table
    assert "[a]" not in table and "(2)" in table
    capsys.readouterr()
    assert train_all.main([*args, "--seeds", "0", "--epochs", "5"]) == 0
    out = capsys.readouterr().out
    assert "[popularity_synthetic_seed0] finished earlier: " in out
    # A record written before these were left out still shares the row.
    old = _read(results / "popularity_synthetic_seed0.json")
    old.update(epochs_requested=1, eval_every=1)
    (results / "popularity_synthetic_seed0.json").write_text(json.dumps(old))
    table = open(train_all.write_table(str(results))).read()
    assert "[a]" not in table and "(2)" in table
    assert train_all.main([*args, "--seeds", "0", "--epochs", "5"]) == 0
    assert "finished earlier: " in capsys.readouterr().out


@pytest.mark.usefixtures("slow_clock", "small_synthetic")
def test_a_budget_equal_to_the_seconds_spent_does_not_continue(tmp_path, capsys):
    # The run would stop again before its next epoch: it is left as it is.
    args = _args(tmp_path, "--models", "bpr_mf", "--epochs", "2", "--no-export")
    path = tmp_path / "results" / "bpr_mf_synthetic_seed0.json"
    state = tmp_path / "checkpoints" / "bpr_mf_synthetic_seed0" / "main" / "state.json"
    assert train_all.main([*args, "--time-budget", "15"]) == 0
    spent = json.loads(state.read_text())["seconds"]
    stamp = os.path.getmtime(path)
    capsys.readouterr()
    assert train_all.main([*args, "--time-budget", repr(float(spent))]) == 0
    assert "pass a larger --time-budget" in capsys.readouterr().out
    assert os.path.getmtime(path) == stamp
