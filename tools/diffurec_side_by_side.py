#!/usr/bin/env python
"""Side-by-side check: the official DiffuRec code and the harness's DiffuRec on the same Beauty sequences.

The official repository (WHUIR/DiffuRec) stays outside the project: give its
checkout with ``--official PATH`` (a folder with ``src/main.py``); nothing of
it is copied anywhere. The script

1. loads the harness's ``amazon-beauty`` and its leave-one-out split
   (``bench.protocol.splits.make_split``) and writes it in the official format
   (``dataset.pkl`` with ``train``/``val``/``test``/``umap``/``smap``) into a
   temporary folder outside the project: ``<tmp>/datasets/data/<name>/``;
2. checks that the official loaders (``src/utils.py``: ``Data_Train``,
   ``Data_Val``, ``Data_Test``, run from the checkout) give exactly the
   harness's examples: the same training (prefix, next item) pairs, and the
   same validation and test inputs and targets, user by user; it prints the
   check and stops if anything differs;
3. runs the official ``src/main.py``, unmodified, from ``<tmp>/src`` (main.py
   reads ``../datasets/data/<name>/dataset.pkl`` relative to its working
   folder) with ``--eval_interval 1``, and at the same time (or after it, with
   ``--sequential``) trains the harness's ``diffurec`` through the trial
   machinery (``bench.run.trial.fit_trial``) with the same sizes, validating
   every epoch; one torch thread each;
4. prints both validation curves and writes
   ``results/benchmarks/diffurec-side-by-side.json`` (and a PNG figure).

The official code predates numpy 1.24: the observer restores the alias
``numpy.int = int`` that its ``step_sample.py`` needs, and changes nothing else.
The official trainer prints only its running best metrics, not each
validation's. To read every validation, main.py runs under a small observer
(``python -c`` in the child, see ``OBSERVER``): it wraps the official
``trainer.hrs_and_ndcgs_k``, returns its result untouched and prints it per
batch, with the target's rank under the harness's protocol for the same
scores. Each epoch's official value is then aggregated as the official
trainer does (mean over batches, x100, 4 decimals), and is checked against
the running bests the official code prints itself.

    python tools/diffurec_side_by_side.py --official PATH [--epochs 10] [--sequential] [--official-commit SHA]

Not a test, and not part of the library: it needs the official checkout and
about half an hour on 2 CPU cores at the default size.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import json
import math
import os
import pickle
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = Path("results/benchmarks/diffurec-side-by-side.json")
OFFICIAL_FILES = ("src/main.py", "src/trainer.py", "src/utils.py", "src/model.py", "src/diffurec.py", "src/step_sample.py")
KS = (5, 10, 20)
BATCH_TAG = "DRBENCH_BATCH "

# Runs inside the child, with the official src/ first on sys.path and <tmp>/src as working folder.
# argv: mode ("views" or "train"), the official src folder, then (train) main.py's arguments or
# (views) dataset name, max_len, batch size and the .npz to write.
OBSERVER = r'''
import json, os, runpy, sys
src, mode, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
sys.path[:] = [src] + [p for p in sys.path if p not in ("", ".")]
import numpy
import torch
torch.set_num_threads(1)
if not hasattr(numpy, "int"):
    numpy.int = int  # removed in numpy 1.24; the official step_sample.py still names it (an alias, same behaviour)
if mode == "views":
    import argparse, pickle
    import numpy as np
    from utils import Data_Train, Data_Val, Data_Test, TrainDataset
    name, max_len, batch_size, out = rest[0], int(rest[1]), int(rest[2]), rest[3]
    with open("../datasets/data/" + name + "/dataset.pkl", "rb") as f:  # the path main.py reads
        raw = pickle.load(f)
    args = argparse.Namespace(max_len=max_len, batch_size=batch_size)
    train = Data_Train(raw["train"], args)
    examples = TrainDataset(train.id_seq, max_len)
    pairs = [examples[i] for i in range(len(examples))]
    views = {"n_items": np.array(len(raw["smap"])),
             "train_tokens": torch.stack([p[0] for p in pairs]).numpy(),
             "train_labels": torch.cat([p[1] for p in pairs]).numpy()}
    for part, loader in (("val", Data_Val(raw["train"], raw["val"], args).get_pytorch_dataloaders()),
                         ("test", Data_Test(raw["train"], raw["val"], raw["test"], args).get_pytorch_dataloaders())):
        batches = list(loader)
        views[part + "_users"] = np.array(loader.dataset.users)
        views[part + "_tokens"] = torch.cat([b[0] for b in batches]).numpy()
        views[part + "_labels"] = torch.cat([b[1] for b in batches]).view(-1).numpy()
        views[part + "_batches"] = np.array(len(batches))
    np.savez(out, **views)
else:
    import trainer
    official = trainer.hrs_and_ndcgs_k
    def observed(scores, labels, ks):
        result = official(scores, labels, ks)  # the official numbers, returned untouched
        s = scores.detach().float().cpu().clone()
        y = labels.detach().cpu().view(-1)
        s[:, 0] = -float("inf")  # the harness never ranks the padding row
        ranks = (s >= s.gather(1, y[:, None])).sum(1)  # pessimistic ties, as bench.protocol.metrics
        print("DRBENCH_BATCH " + json.dumps({"official": result, "labels": y.tolist(), "ranks": ranks.tolist()}), flush=True)
        return result
    trainer.hrs_and_ndcgs_k = observed
    sys.argv = [os.path.join(src, "main.py")] + rest
    runpy.run_path(sys.argv[0], run_name="__main__")
'''


# --- the data, in the official format ---------------------------------------------------------


def to_official_format(split, user_ids=None, item_ids=None) -> dict:
    """The harness's leave-one-out split as the official ``dataset.pkl`` dict.

    ``train[u]`` is user u's training sequence (``split.train``, i.e. all but its
    last two items), ``val[u]`` and ``test[u]`` the one-item lists of its
    validation and test targets; users are the dataset's rows (0-based, as in
    the official Beauty file), items keep the harness's ids 1..n_items. Only
    ``len(smap)`` (the catalogue size) is read by the official code.
    """
    if split.protocol != "loo":
        raise ValueError(f"the official format has one validation and one test item per user: needs a loo split, got {split.protocol}")
    evaluated = np.asarray(split.valid.users)
    if len(evaluated) != len(split.train) or not np.array_equal(evaluated, split.test.users):
        raise ValueError(f"{len(split.train) - len(evaluated)} users have fewer than 3 interactions; the official loaders "
                         "need a validation and a test item for every training user")
    users = [int(u) for u in evaluated]
    train = {u: [int(i) for i in split.train[u]] for u in users}
    val = {u: [int(t)] for u, t in zip(users, split.valid.targets)}
    test = {u: [int(t)] for u, t in zip(users, split.test.targets)}
    umap = {(str(user_ids[u]) if user_ids is not None else u): u for u in users}
    smap = {(str(item_ids[i]) if item_ids is not None else i): i for i in range(1, split.n_items + 1)}
    return {"train": train, "val": val, "test": test, "umap": umap, "smap": smap}


def left_pad(rows, max_len: int) -> np.ndarray:
    out = np.zeros((len(rows), max_len), dtype=np.int64)
    for r, seq in enumerate(rows):
        seq = np.asarray(seq)[-max_len:]
        if len(seq):
            out[r, max_len - len(seq):] = seq
    return out


def harness_views(split, max_len: int) -> dict:
    """What the harness trains and evaluates on, in the official loaders' layout (last max_len items, left-padded)."""
    from diffusion.diffurec import history_windows, prefix_examples

    targets, starts = prefix_examples(split.train)
    values = split.train.values.astype(np.int64)
    windows = history_windows(values, targets, starts, max_len)
    train_tokens = np.zeros((len(targets), max_len), dtype=np.int64)
    train_tokens[:, max_len - windows.shape[1]:] = windows
    views = {"n_items": split.n_items, "train_tokens": train_tokens, "train_labels": values[targets]}
    for part, evalset in (("val", split.valid), ("test", split.test)):
        order = np.argsort(evalset.users, kind="stable")  # the official loaders go through users sorted
        views[part + "_users"] = evalset.users[order]
        views[part + "_tokens"] = left_pad([evalset.histories[int(r)] for r in order], max_len)
        views[part + "_labels"] = evalset.targets[order]
    return views


def sorted_rows(tokens: np.ndarray, labels: np.ndarray) -> np.ndarray:
    rows = np.concatenate([tokens, labels[:, None]], axis=1)
    return rows[np.lexsort(rows.T[::-1])]


def compare_views(official: dict, harness: dict) -> list[dict]:
    """One line per check: do the official loaders' examples equal the harness's? ``ok`` is False on any difference."""
    checks = [{"check": "catalogue size (len(smap) = n_items)", "official": int(official["n_items"]),
               "harness": int(harness["n_items"]), "ok": int(official["n_items"]) == int(harness["n_items"])}]
    n_off, n_har = len(official["train_labels"]), len(harness["train_labels"])
    same = n_off == n_har and np.array_equal(sorted_rows(official["train_tokens"], official["train_labels"]),
                                             sorted_rows(harness["train_tokens"], harness["train_labels"]))
    checks.append({"check": "training examples: every (last max_len items of the prefix, next item), as a multiset",
                   "official": n_off, "harness": n_har, "ok": bool(same)})
    for part, name in (("val", "validation"), ("test", "test")):
        users_ok = np.array_equal(official[part + "_users"], harness[part + "_users"])
        targets_ok = users_ok and np.array_equal(official[part + "_labels"], harness[part + "_labels"])
        inputs_ok = users_ok and np.array_equal(official[part + "_tokens"], harness[part + "_tokens"])
        n = len(official[part + "_labels"])
        checks.append({"check": f"{name} users, in order", "official": n, "harness": len(harness[part + "_labels"]), "ok": bool(users_ok)})
        checks.append({"check": f"{name} targets, user by user", "official": n,
                       "harness": int((official[part + "_labels"] == harness[part + "_labels"]).sum()) if users_ok else 0, "ok": bool(targets_ok)})
        checks.append({"check": f"{name} inputs (last max_len items, left-padded), user by user", "official": n,
                       "harness": int((official[part + "_tokens"] == harness[part + "_tokens"]).all(1).sum()) if users_ok else 0,
                       "ok": bool(inputs_ok)})
    return checks


# --- the official run: its log, parsed ---------------------------------------------------------


def official_metrics(batches: list[dict]) -> dict:
    """The official trainer's aggregation of one evaluation: mean over batches of the batch means, x100, 4 decimals."""
    keys = batches[0]["official"].keys()
    return {key: round(float(np.mean([b["official"][key] for b in batches])) * 100, 4) for key in keys}


def harness_metrics(ranks: np.ndarray) -> dict:
    """HR/NDCG@K of target ranks (pessimistic ties, padding not ranked), the mean over users, as bench.protocol.metrics."""
    from bench.protocol.metrics import per_user_metrics

    return {name: float(values.mean()) for name, values in per_user_metrics(ranks, KS).items() if not name.startswith("mrr")}


def literal(line: str):
    """A dict the official code printed; numpy 2 prints its floats as ``np.float64(x)``."""
    return ast.literal_eval(re.sub(r"np\.(?:float|int)\d*\(([^()]*)\)", r"\1", line))


def parse_official_log(lines: list[str], val_targets: np.ndarray, val_batches: int) -> dict:
    """Per-validation metrics, the printed running bests and the final test from the official run's stdout.

    Batches printed after "start predicting" in epoch k are that validation's (the first ``val_batches``
    of them, whose labels must be the validation targets in order); later ones are the final test.
    """
    epoch, collecting, pending = None, 0, []
    rounds, bests, test_batches, printed_test = [], [], [], None
    after_test = False
    for line in lines:
        line = line.rstrip("\n")
        if line.startswith(BATCH_TAG):
            batch = json.loads(line[len(BATCH_TAG):])
            if collecting:
                pending.append(batch)
                collecting -= 1
                if not collecting:
                    labels = np.concatenate([b["labels"] for b in pending])
                    if not np.array_equal(labels, val_targets):
                        raise RuntimeError(f"official validation at epoch {epoch}: its labels are not the validation targets")
                    ranks = np.concatenate([b["ranks"] for b in pending])
                    rounds.append({"official_epoch": epoch, "official": official_metrics(pending), "ranks": ranks})
                    pending = []
            else:
                test_batches.append(batch)
        elif m := re.match(r"Epoch: (\d+)$", line):
            epoch = int(m.group(1))
        elif line.startswith("start predicting"):
            collecting = val_batches
        elif line.startswith("{'Best_HR@5'"):
            bests.append({"after_official_epoch": rounds[-1]["official_epoch"] if rounds else None, **literal(line)})
        elif line.startswith("Test---"):
            after_test = True
        elif after_test and printed_test is None and line.startswith("{'HR@5'"):
            printed_test = literal(line)
    return {"rounds": rounds, "printed_bests": bests, "test_batches": test_batches, "printed_test": printed_test}


def check_running_bests(rounds: list[dict], printed: list[dict]) -> list[str]:
    """Problems, if any: each printed running best must be the maximum of the observed curve so far."""
    problems = []
    for entry in printed:
        upto = [r for r in rounds if entry["after_official_epoch"] is not None and r["official_epoch"] <= entry["after_official_epoch"]]
        for key, value in entry.items():
            if not key.startswith("Best_"):
                continue
            observed = max(r["official"][key.removeprefix("Best_")] for r in upto)
            if not math.isclose(observed, value, abs_tol=1e-9):
                problems.append(f"after epoch {entry['after_official_epoch']}: printed {key} {value} but observed maximum {observed}")
    return problems


# --- runs ----------------------------------------------------------------------------------------


def child_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("PYTHONPATH", None)  # the official modules (utils, model, trainer) must not meet anything else
    return env


def official_views(official: Path, workdir: Path, name: str, max_len: int, batch_size: int) -> dict:
    out = workdir / "official-views.npz"
    command = [sys.executable, "-c", OBSERVER, str((official / "src").resolve()), "views", name, str(max_len), str(batch_size), str(out)]
    subprocess.run(command, cwd=workdir / "src", env=child_env(), check=True)
    with np.load(out) as stored:
        return {key: stored[key] for key in stored.files}


class OfficialRun:
    """The official main.py under the observer, as a child process; its stdout is kept (and echoed in part)."""

    ECHO = re.compile(r"^(Epoch: |loss in epoch|start predicting|\{'Best_HR|Test---|\{'HR@5')")

    def __init__(self, official: Path, workdir: Path, main_args: list[str]):
        self.command = [sys.executable, "-c", OBSERVER, str((official / "src").resolve()), "train", *main_args]
        self.workdir, self.lines, self.started = workdir, [], None
        self.epoch_times: dict[int, float] = {}
        self.process = None
        self.thread = None

    def start(self):
        self.started = time.monotonic()
        self.process = subprocess.Popen(self.command, cwd=self.workdir / "src", env=child_env(), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, bufsize=1)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        with open(self.workdir / "official-stdout.log", "w", encoding="utf-8") as log:
            for line in self.process.stdout:
                self.lines.append(line)
                log.write(line)
                if m := re.match(r"Epoch: (\d+)", line):
                    self.epoch_times[int(m.group(1))] = time.monotonic() - self.started
                if self.ECHO.match(line):
                    print(f"[official {time.monotonic() - self.started:6.0f}s] {line.rstrip()[:160]}", flush=True)

    def wait(self) -> int:
        code = self.process.wait()
        self.thread.join()
        self.seconds = time.monotonic() - self.started
        return code


def run_harness(split, args) -> dict:
    import torch

    from bench.protocol.evaluation import evaluate
    from bench.run.config import ProtocolConfig
    from bench.run.trial import fit_trial, make_trial_spec, pick_device

    torch.set_num_threads(1)
    protocol = ProtocolConfig(split="loo", ks=KS, exclude_history=False)
    params = harness_params(args)
    training = harness_training(args)
    spec = make_trial_spec(args.dataset, "diffurec-side-by-side", "diffurec", args.seed, params, training, protocol)
    started = time.monotonic()

    def progress(record: dict) -> None:
        print(f"[harness  {time.monotonic() - started:6.0f}s] epoch {record['epoch']}: loss {record['loss']:.4f}, "
              f"valid HR@10 {record['valid_hr@10']:.4f}, NDCG@10 {record['valid_ndcg@10']:.4f}", flush=True)

    model, summary, fit_seconds = fit_trial(spec, split, progress)
    test = evaluate(model, split.test, split.n_items, KS, False, protocol.eval_batch_size, pick_device())
    return {"spec": spec, "history": summary.history, "best_epoch": summary.best_epoch, "fit_seconds": fit_seconds,
            "train_seconds": summary.train_time_s, "test": {k: v for k, v in test.metrics.items() if k.split("@")[0] in ("hr", "ndcg")},
            "num_parameters": model.num_parameters()}


def pop_validation(split) -> dict:
    from bench.protocol.evaluation import evaluate
    from bench.models.base import build_model, model_entry

    model = build_model("pop", model_entry("pop").config_class(), split.n_items)
    model.fit(split.train, None, lambda m: {})
    result = evaluate(model, split.valid, split.n_items, KS, False)
    return {k: v for k, v in result.metrics.items() if k.split("@")[0] in ("hr", "ndcg")}


def harness_params(args) -> dict:
    # The official model's settings at this size; timestep_sampler "uniform" is what the official "lossaware"
    # sampler does (its loss feedback is commented out, so it stays uniform); item_init_std 1.0 is its N(0, 1).
    return {"max_len": args.max_len, "hidden_size": args.hidden, "n_blocks": args.blocks, "n_heads": 4, "dropout": 0.1,
            "embedding_dropout": 0.3, "diffusion_steps": args.diffusion_steps, "steps": args.diffusion_steps,
            "schedule": "trunc_lin", "timestep_sampler": "uniform", "lambda_uncertainty": 0.001, "item_init_std": 1.0}


def harness_training(args) -> dict:
    # The official loop: Adam 1e-3, batch 512, StepLR x0.1 every 100 epochs, checkpoint on any metric's gain;
    # validation every epoch and no early stop within the run; uniformly random batches, as the official loader
    return {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 1e-3, "eval_every": 1, "patience": args.epochs,
            "lr_step_every": 100, "lr_step_factor": 0.1, "checkpoint": "any_metric", "bucket_by_length": False}


def official_args(args, name: str) -> list[str]:
    return ["--dataset", name, "--device", "cpu", "--max_len", str(args.max_len), "--hidden_size", str(args.hidden),
            "--num_blocks", str(args.blocks), "--diffusion_steps", str(args.diffusion_steps), "--epochs", str(args.epochs),
            "--eval_interval", "1", "--patience", str(args.epochs + 1), "--batch_size", str(args.batch_size),
            "--random_seed", str(args.seed), "--log_file", "log/"]


def file_digests(official: Path) -> dict:
    return {name: hashlib.sha256((official / name).read_bytes()).hexdigest()[:16] for name in OFFICIAL_FILES}


def official_commit(official: Path, given: str | None) -> str:
    if given:
        return given
    try:
        done = subprocess.run(["git", "-C", str(official), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown (pass --official-commit)"


# --- output --------------------------------------------------------------------------------------


def curve_rows(official_rounds: list[dict], harness_history: list[dict], epochs: int) -> list[dict]:
    """One row per number of training epochs: official (its own numbers and harness-metric numbers) and harness."""
    by_epochs = {r["official_epoch"] + 1: r for r in official_rounds}  # official "Epoch: k" validates after k + 1 epochs
    harness = {h["epoch"]: h for h in harness_history}
    rows = []
    for e in range(1, epochs + 1):
        row = {"epochs_trained": e}
        if e in by_epochs:
            o = by_epochs[e]
            row.update({f"official_{k.lower()}": o["official"][k] / 100 for k in o["official"]})
            row.update({f"official_harness_metric_{k}": v for k, v in o["harness_metric"].items()})
        if e in harness:
            row.update({k.replace("valid_", "harness_"): v for k, v in harness[e].items()
                        if k.startswith("valid_") and k.split("@")[0] in ("valid_hr", "valid_ndcg")})
            row["harness_loss"] = harness[e]["loss"]
        rows.append(row)
    return rows


def print_table(rows: list[dict], pop: dict | None) -> str:
    from tabulate import tabulate

    def cell(row, key):
        return f"{row[key]:.4f}" if key in row else "-"

    table = [[r["epochs_trained"], cell(r, "official_hr@10"), cell(r, "official_ndcg@10"), cell(r, "official_harness_metric_ndcg@10"),
              cell(r, "harness_hr@10"), cell(r, "harness_ndcg@10")] for r in rows]
    if pop:
        table.append(["Pop", "", "", "", f"{pop['hr@10']:.4f}", f"{pop['ndcg@10']:.4f}"])
    text = tabulate(table, headers=["epochs", "official HR@10", "official NDCG@10", "official NDCG@10\n(harness metric)",
                                    "harness HR@10", "harness NDCG@10"], tablefmt="github", disable_numparse=True)
    print(text)
    return text


def write_figure(rows: list[dict], pop: dict | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in ((axes[0], "hr@10", "HR@10"), (axes[1], "ndcg@10", "NDCG@10")):
        for key, name, style in ((f"official_{metric}", "official code (its own eval)", "o-"),
                                 (f"official_harness_metric_{metric}", "official code, harness metric", "o--"),
                                 (f"harness_{metric}", "harness diffurec", "s-")):
            points = [(r["epochs_trained"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points), style, label=name, markersize=4)
        if pop:
            ax.axhline(pop[metric], color="grey", linestyle=":", label="Pop")
        ax.set_xlabel("training epochs")
        ax.set_ylabel(f"validation {label}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    from bench.files import atomic_write

    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=120)
    plt.close(fig)
    atomic_write(path, image.getvalue())


# --- main ----------------------------------------------------------------------------------------



def portable_arguments(arguments: list[str]) -> list[str]:
    """The command line as recorded: the paths given for the checkout and the raw output replaced by placeholders (no machine paths in results)."""
    shown, placeholder = [], {"--official": "CHECKOUT", "--raw-dir": "RAW_DIR"}
    for i, argument in enumerate(arguments):
        name = argument.split("=", 1)[0]
        if "=" in argument and name in placeholder:
            shown.append(f"{name}={placeholder[name]}")
        elif i > 0 and arguments[i - 1] in placeholder:
            shown.append(placeholder[arguments[i - 1]])
        else:
            shown.append(argument)
    return shown

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", required=True, type=Path, help="checkout of WHUIR/DiffuRec, outside this project")
    parser.add_argument("--official-commit", help="its commit, when the checkout has no .git (e.g. made with git archive)")
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--data-root")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--max-len", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--diffusion-steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sequential", action="store_true", help="run the official code first, then the harness (default: both at once)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-figure", action="store_true")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the temporary folder (data file, official log)")
    parser.add_argument("--raw-dir", type=Path, help="also save the official stdout and the harness history here (outside the project)")
    args = parser.parse_args()

    official = args.official
    if not (official / "src" / "main.py").is_file():
        print(f"error: {official} is not a DiffuRec checkout (no src/main.py)", file=sys.stderr)
        return 2
    try:
        official.resolve().relative_to(ROOT)
        print("error: the official checkout must stay outside this project", file=sys.stderr)
        return 2
    except ValueError:
        pass
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    from bench.data import load_dataset, resolve_data_root
    from bench.protocol.splits import make_split
    from bench.provenance import code_version, cpu_name
    from bench.files import atomic_write, json_default

    data = load_dataset(args.dataset, resolve_data_root(args.data_root))
    split = make_split(data, "loo")
    print(f"{args.dataset}: {len(split.train):,} users, {split.n_items:,} items; loo split {split.fingerprint}")
    name = "drbench_" + args.dataset.replace("-", "_")

    with tempfile.TemporaryDirectory(prefix="diffurec-side-by-side-") as tmp:
        workdir = Path(tmp)
        (workdir / "datasets" / "data" / name).mkdir(parents=True)
        (workdir / "src").mkdir()
        with open(workdir / "datasets" / "data" / name / "dataset.pkl", "wb") as handle:
            pickle.dump(to_official_format(split, data.user_ids, data.item_ids), handle)

        views = official_views(official, workdir, name, args.max_len, args.batch_size)
        checks = compare_views(views, harness_views(split, args.max_len))
        from tabulate import tabulate

        print("Do the official loaders read exactly the harness's split?")
        print(tabulate([[c["check"], c["official"], c["harness"], "yes" if c["ok"] else "NO"] for c in checks],
                       headers=["check", "official", "harness", "same"], tablefmt="github"))
        if not all(c["ok"] for c in checks):
            print("error: the official loaders do not see the harness's split; nothing was trained", file=sys.stderr)
            return 1
        val_order = np.argsort(split.valid.users, kind="stable")
        val_targets = split.valid.targets[val_order]

        run = OfficialRun(official, workdir, official_args(args, name))
        started = time.monotonic()
        run.start()
        if args.sequential:
            code = run.wait()
            harness = run_harness(split, args)
        else:
            harness = run_harness(split, args)
            code = run.wait()
        wall = time.monotonic() - started
        if code != 0:
            print("".join(run.lines[-30:]), file=sys.stderr)
            print(f"error: the official main.py exited with status {code}", file=sys.stderr)
            return 1
        if args.raw_dir:  # the raw material, so that a failure below costs no retraining
            args.raw_dir.mkdir(parents=True, exist_ok=True)
            (args.raw_dir / "official-stdout.log").write_text("".join(run.lines), encoding="utf-8")
            (args.raw_dir / "harness.json").write_text(json.dumps(harness, default=json_default), encoding="utf-8")
        parsed = parse_official_log(run.lines, val_targets, int(views["val_batches"]))
        if args.keep_workdir:
            kept = Path(tempfile.mkdtemp(prefix="diffurec-side-by-side-kept-"))
            for item in ("official-stdout.log", f"datasets/data/{name}/dataset.pkl"):
                (kept / Path(item).name).write_bytes((workdir / item).read_bytes())
            print(f"kept the official log and data file in {kept}")

    for r in parsed["rounds"]:
        # the harness's users are the same as the official's sorted users (checked above): ranks line up
        r["harness_metric"] = harness_metrics(np.asarray(r["ranks"]))
    problems = check_running_bests(parsed["rounds"], parsed["printed_bests"])
    test_ranks = np.concatenate([b["ranks"] for b in parsed["test_batches"]]) if parsed["test_batches"] else None
    pop = pop_validation(split)

    rows = curve_rows(parsed["rounds"], harness["history"], args.epochs)
    print()
    print(f"Validation on {args.dataset} (loo), max_len {args.max_len}, hidden {args.hidden}, {args.blocks} block, "
          f"{args.diffusion_steps} diffusion steps, batch {args.batch_size}, seed {args.seed}:")
    table = print_table(rows, pop)
    print("running bests printed by the official code agree with the observed curve" if not problems else
          "MISMATCH with the official code's printed running bests:\n  " + "\n  ".join(problems))

    commit = code_version()
    result = {
        "what": "DiffuRec side by side: the official code (WHUIR/DiffuRec src/main.py, unmodified, observed) and the harness's "
                "diffurec, trained on the same leave-one-out split at the same small size, validation every epoch",
        "command": " ".join(["python", "tools/diffurec_side_by_side.py", *portable_arguments(sys.argv[1:])]),
        "harness_commit": commit["code_commit"],
        "harness_dirty": commit["code_dirty"],
        "official_repository": "https://github.com/WHUIR/DiffuRec",
        "official_commit": official_commit(official, args.official_commit),
        "official_checkout": "given by --official (a checkout outside the project)",
        "official_file_sha256_16": file_digests(official),
        "hardware": cpu_name(),
        "torch_version": torch.__version__,
        "threads": "one torch thread per process (OMP_NUM_THREADS=1)",
        "parallel": not args.sequential,
        "dataset": args.dataset,
        "split": {"protocol": "loo", "fingerprint": split.fingerprint, **split.stats, "n_items": split.n_items},
        "split_check": checks,
        "sizes": {"max_len": args.max_len, "hidden_size": args.hidden, "num_blocks": args.blocks, "heads": 4,
                  "diffusion_steps": args.diffusion_steps, "inference_steps": args.diffusion_steps, "batch_size": args.batch_size,
                  "epochs": args.epochs, "seed": args.seed},
        "official_args": official_args(args, name),
        "harness_params": harness_params(args),
        "harness_training": harness_training(args),
        "harness_num_parameters": harness["num_parameters"],
        "curves": rows,
        "pop_validation": pop,
        "official_printed_running_bests": parsed["printed_bests"],
        "official_running_bests_agree": not problems,
        "official_running_best_problems": problems,
        "official_printed_test_x100": parsed["printed_test"],
        "official_test_harness_metric": harness_metrics(test_ranks) if test_ranks is not None else None,
        "harness_best_epoch": harness["best_epoch"],
        "harness_test": harness["test"],
        "seconds": {"wall": wall, "official": run.seconds, "official_epoch_starts": run.epoch_times,
                    "harness_fit": harness["fit_seconds"], "harness_train": harness["train_seconds"]},
        "table": table,
        "notes": [
            "epochs_trained e: official 'Epoch: e-1' (0-based; the official trainer validates from its epoch 1 on, so never after the first epoch); harness epoch e.",
            "official_*: the official trainer's own numbers (mean over 512-user batches of the batch means, the last batch of the 22,363 users weighted as a full one; "
            "ranked with torch.topk over all item_num + 1 rows, including the trainable padding row 0; ties as topk breaks them). Divided by 100 here.",
            "official_harness_metric_*: the same official scores ranked as the harness ranks: padding row excluded, pessimistic ties, mean over users.",
            "harness_*: bench.protocol.evaluation (full ranking, padding excluded, pessimistic ties, history not excluded, mean over users).",
        ],
    }
    out = args.out if args.out.is_absolute() else ROOT / args.out
    atomic_write(out, json.dumps(result, indent=2, default=json_default) + "\n")
    print(f"wrote {args.out}")
    if not args.no_figure:
        figure = out.with_suffix(".png")
        write_figure(rows, pop, figure, f"DiffuRec on {args.dataset}: official code vs harness (max_len {args.max_len}, "
                                        f"hidden {args.hidden}, {args.blocks} block, {args.diffusion_steps} steps)")
        print(f"wrote {figure.relative_to(ROOT) if figure.is_relative_to(ROOT) else figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
