"""The BPR-MF tuning script picks by validation and writes its record."""

import json
import os
import runpy
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "tune_bpr_mf.py")


def test_tuning_picks_the_best_validation_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "tune.json"
    monkeypatch.setattr(
        sys,
        "argv",
        [
            SCRIPT,
            "--dataset", "synthetic",
            "--dims", "4,16",
            "--learning-rates", "5e-3",
            "--l2s", "1e-4",
            "--epochs", "4",
            "--out", str(out),
        ],
    )  # fmt: skip
    runpy.run_path(SCRIPT, run_name="__main__")
    with open(out) as handle:
        record = json.load(handle)
    values = [run["best"]["value"] for run in record["runs"]]
    assert len(values) == 2
    assert record["chosen"]["best"]["value"] == max(values)
    assert set(record["test"]) == {"loo_sampled", "loo_full"}
    assert 0.0 <= record["test"]["loo_sampled"]["hr@10"] <= 1.0
    assert record["dataset_checksum_sha256"]
    assert "chosen: dim" in capsys.readouterr().out
