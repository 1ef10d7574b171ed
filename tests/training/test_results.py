import json
import os
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest

from keras_rec import configs
from keras_rec.training import results
from keras_rec.training.results import (
    atomic_write_json,
    code_version,
    differing_keys,
    flatten,
    markdown_table,
    onednn_enabled,
    package_versions,
    summarize_seeds,
)


def test_summarize_seeds_mean_and_std():
    records = [{"metrics": {"hr@10": v}} for v in (0.5, 0.7, 0.9)]
    summary = summarize_seeds(records)["hr@10"]
    assert summary["n"] == 3
    np.testing.assert_allclose(summary["mean"], 0.7)
    np.testing.assert_allclose(summary["std"], np.std([0.5, 0.7, 0.9]))


def test_markdown_table_puts_ours_beside_the_paper():
    row = {
        "model": "m",
        "dataset": "d",
        "protocol": "p",
        "metric": "hr@10",
        "mean": 0.73,
        "std": 0.01,
        "n": 3,
        "paper": 0.730,
        "seconds_per_epoch": 2.0,
    }
    table = markdown_table([row])
    assert "| m | d | p | hr@10 | 0.7300 ± 0.0100 (3) | 0.73 | 100.0% | 2.00 |" in table


def test_atomic_write_json_replaces_whole_file(tmp_path):
    path = str(tmp_path / "r.json")
    atomic_write_json(path, {"a": np.float32(1.5), "b": np.arange(2)})
    with open(path) as handle:
        assert json.load(handle) == {"a": 1.5, "b": [0, 1]}
    assert os.listdir(tmp_path) == ["r.json"]


def test_atomic_writes_give_the_mode_open_would(tmp_path):
    path = tmp_path / "r.json"
    umask = os.umask(0o027)
    try:
        atomic_write_json(str(path), {"a": 1})
    finally:
        os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # a new file: 0o666 & ~umask
    path.chmod(0o604)
    atomic_write_json(str(path), {"a": 2})
    assert stat.S_IMODE(path.stat().st_mode) == 0o604  # a replaced one keeps its own


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="Linux only")
def test_reading_the_umask_does_not_change_it(tmp_path, monkeypatch):
    # Setting it to read it back would give other threads' new files 0o666.
    def no_umask(mask):
        raise AssertionError(f"os.umask({mask:o}) called")

    umask = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", no_umask)
        atomic_write_json(str(tmp_path / "r.json"), {"a": 1})
    finally:
        monkeypatch.undo()
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o640


def test_a_failed_write_leaves_the_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "r.json")
    atomic_write_json(path, {"a": 1})
    real_write = results.os.fdopen

    def half_written(handle, mode):  # writes half the text, then fails
        file = real_write(handle, mode)
        write = file.write

        def write_half(text):
            write(text[: len(text) // 2])
            raise OSError("disk full")

        file.write = write_half
        return file

    monkeypatch.setattr(results.os, "fdopen", half_written)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(path, {"a": 2, "b": list(range(100))})
    with open(path) as handle:
        assert json.load(handle) == {"a": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def test_package_versions_names_tensorflow_and_keras():
    versions = package_versions()
    assert "keras" in versions and "python" in versions
    assert "tensorflow" in versions or "tensorflow-cpu" in versions


def test_onednn_is_on_in_the_tests_as_in_train_all():
    # conftest.py sets TF_ENABLE_ONEDNN_OPTS=1 before TensorFlow loads, as
    # keras_rec/__init__.py and train_all.py do; a `0` there turns it off.
    expected = os.environ["TF_ENABLE_ONEDNN_OPTS"].lower() in ("1", "true")
    assert onednn_enabled() is expected


def test_select_defaults_to_synthetic_and_rejects_unknown_names():
    chosen = configs.select()
    assert chosen and all(e.dataset == "synthetic" for e in chosen)
    assert {"popularity", "bpr_mf"} <= {e.model for e in chosen}
    with pytest.raises(ValueError, match="Unknown dataset"):
        configs.select(datasets=["nope"])
    with pytest.raises(ValueError, match="Unknown model"):
        configs.select(models=["nope"])


def test_every_experiment_names_a_known_dataset_and_protocol():
    from keras_rec.data.datasets import LOADERS, PROTOCOLS

    for experiment in configs.EXPERIMENTS:
        assert experiment.dataset in LOADERS
        assert experiment.protocol in PROTOCOLS
        assert set(experiment.views) <= set(PROTOCOLS)
        assert (experiment.build is None) != (experiment.pretrain is None)


def test_select_refuses_what_it_would_drop():
    with pytest.raises(ValueError, match="Model 'sasrec' has no entry"):
        configs.select(["bpr_mf", "sasrec"], ["gowalla"])
    with pytest.raises(ValueError, match="Dataset 'gowalla' has no entry"):
        configs.select(["sasrec"], ["synthetic", "gowalla"])
    with pytest.raises(ValueError, match="No model requested"):
        configs.select([], ["synthetic"])
    with pytest.raises(ValueError, match="No dataset requested"):
        configs.select(["bpr_mf"], [])
    # Each model and dataset has an entry: the pairs that exist are run.
    chosen = configs.select(["bpr_mf", "sasrec"], ["synthetic", "gowalla"])
    assert {(e.model, e.dataset) for e in chosen} >= {
        ("bpr_mf", "gowalla"),
        ("sasrec", "synthetic"),
    }


def test_flatten_and_differing_keys():
    a = {"config": {"lr": 0.1, "layers": [{"units": 4}]}, "epochs": 2}
    b = {"config": {"lr": 0.1, "layers": [{"units": 8}]}, "epochs": 2, "x": None}
    assert flatten(a) == {"config.lr": 0.1, "config.layers[0].units": 4, "epochs": 2}
    assert differing_keys(a, b) == ["config.layers[0].units", "x"]
    assert differing_keys(a, a) == []


def test_code_version_names_the_checkout_commit():
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not run from a git checkout (or no git): no commit to name")
    record = code_version()
    assert record["commit"] == head and isinstance(record["dirty"], bool)
    assert record["cpus"] >= 1


def test_code_version_without_git_says_none(monkeypatch):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(results.subprocess, "run", no_git)
    record = code_version()
    assert record["commit"] is None and record["dirty"] is None
