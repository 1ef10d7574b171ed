"""Results files: atomic JSON records and the Markdown table beside the papers."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import stat
import subprocess
import tempfile
from importlib import metadata

import numpy as np

PACKAGES = (
    "keras_rec",
    "tensorflow",
    "tensorflow-cpu",
    "keras",
    "numpy",
    "scipy",
    "tensorflow-datasets",
    "ai-edge-litert",
)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def atomic_write_json(path: str, record: dict) -> None:
    """Writes `record` to `path` via a temporary file and a rename, so a crash
    never leaves a truncated file where a good one was."""
    atomic_write_text(
        path, json.dumps(_jsonable(record), indent=2, sort_keys=True) + "\n"
    )


def atomic_write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically: into a temporary file of its own
    next to `path` (flushed to disk), then renamed over it. A failure leaves
    `path` as it was and no temporary file behind."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder
    )
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, _file_mode(path))  # not mkstemp's 0o600
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)
        raise


def _file_mode(path: str) -> int:
    """The mode `open(path, "w")` would give: the existing file's, else
    0o666 less the process's umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it
    (setting it to read it back would give files that other threads create
    meanwhile the mode 0o666)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    umask = os.umask(0)
    os.umask(umask)
    return umask


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on, plus Python."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def code_version() -> dict:
    """The keras_rec code a result was made with: the git commit of the
    checkout it is imported from and whether tracked files differ from it
    (`dirty`), and the machine it ran on. The commit and `dirty` are `None`
    outside a git checkout (an installed wheel) or without git."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    record = {
        "commit": None,
        "dirty": None,
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpus": os.cpu_count(),
    }

    def git(*arguments: str) -> str:
        # No optional locks: `status` must not take the index lock that a
        # concurrent `git commit` needs.
        return subprocess.run(
            ["git", "--no-optional-locks", "-C", root, *arguments],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()

    try:
        if git("rev-parse", "--show-toplevel") != os.path.realpath(root):
            return record  # not keras_rec's own checkout
        record["commit"] = git("rev-parse", "HEAD")
        record["dirty"] = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        pass
    return record


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its oneDNN kernels in this process.

    Fixed when TensorFlow loads (`TF_ENABLE_ONEDNN_OPTS`, see
    `keras_rec/__init__.py`); `None` where this TensorFlow does not say.
    """
    try:  # a private module: absent or changed in another TensorFlow
        from tensorflow.python.util import _pywrap_util_port

        return bool(_pywrap_util_port.IsMklEnabled())
    except (ImportError, AttributeError):
        return None


def flatten(value, prefix: str = "") -> dict:
    """A nested dict/list as `{"a.b[0].c": leaf}` (an empty dict or list is
    a leaf of its own)."""
    if isinstance(value, dict) and value:
        flat = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list) and value:
        flat = {}
        for index, item in enumerate(value):
            flat.update(flatten(item, f"{prefix}[{index}]"))
        return flat
    return {prefix: value}


def differing_keys(*records: dict) -> list[str]:
    """The flattened keys (`flatten`) whose values are not the same in all
    `records` (absent in some counts as different), sorted."""
    flats = [flatten(record) for record in records]
    keys = set().union(*flats)
    missing = object()
    return sorted(
        key
        for key in keys
        if any(f.get(key, missing) != flats[0].get(key, missing) for f in flats[1:])
    )


def summarize_seeds(records: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation (ddof=0) over seeds of every test metric."""
    names = sorted({name for r in records for name in r["metrics"]})
    summary = {}
    for name in names:
        values = [r["metrics"][name] for r in records if name in r["metrics"]]
        summary[name] = {
            "mean": float(np.mean(values)),
            "std": float(np.std(values)),
            "n": len(values),
        }
    return summary


def markdown_table(rows: list[dict]) -> str:
    """One row per (model, dataset, protocol, metric): ours beside the paper.

    Each input row: `model`, `dataset`, `protocol`, `metric`, `mean`, `std`,
    `n`, `paper` (or None), `seconds_per_epoch`.
    """
    lines = [
        "| model | dataset | protocol | metric | ours (mean ± std, n seeds) "
        "| paper | ours / paper | s/epoch |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        paper = row.get("paper")
        ratio = f"{row['mean'] / paper:.1%}" if paper else "-"
        lines.append(
            f"| {row['model']} | {row['dataset']} | {row['protocol']} | "
            f"{row['metric']} | {row['mean']:.4f} ± {row['std']:.4f} ({row['n']}) "
            f"| {paper if paper else '-'} | {ratio} | "
            f"{row.get('seconds_per_epoch', float('nan')):.2f} |"
        )
    return "\n".join(lines) + "\n"
