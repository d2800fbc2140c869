#!/usr/bin/env python
"""drbench command line: run a suite through Ray Tune, list data and models, rebuild reports.

    python run_bench.py --suite smoke
    python run_bench.py --suite bench/suites/my.yaml --models sasrec --seeds 0 1 2
    python run_bench.py --suite smoke --resume            # continue the latest smoke run
    python run_bench.py --list-datasets | --list-models
    python run_bench.py --report results/smoke/<run-id>   # tables again, from saved trials
    python run_bench.py --plugin my_model.py --suite my.yaml    # your own model (docs/plugins.md)
    python run_bench.py --suite smoke --datasets ml-100k --export-split DIR | --score LISTS.tsv --label NAME
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Quiet Ray Tune: drbench prints its own one line per trial; Ray's per-trial
# log files and console tables add nothing (--debug brings Ray's logs back).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")

from bench.errors import DrbenchError  # noqa: E402

ROOT = Path(__file__).resolve().parent


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line (``error: ...``), exit status 2, like every other drbench error."""

    def error(self, message):
        self.exit(2, f"error: {' '.join(message.split())} (see: python run_bench.py --help)\n")


def _seed(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a seed; seeds are integers, e.g. --seeds 0 1 2") from None


def parse_args(argv=None) -> argparse.Namespace:
    parser = _OneLineParser(description="drbench: diffusion recommenders vs. strong baselines, one honest protocol.")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--suite", help="suite name (bench/suites/NAME.yaml) or a YAML file")
    action.add_argument("--list-datasets", action="store_true", help="print statistics of every dataset found under the data root")
    action.add_argument("--list-models", action="store_true", help="print the registered models and their default hyperparameters")
    action.add_argument("--download", metavar="DATASET", help="download a dataset's official files into the data root (checksum-verified)")
    action.add_argument("--report", metavar="RUN_DIR", help="rebuild the tables (trials.csv, results.md) and the paper report (report/: accuracy with significance, efficiency, published numbers, figures) of a run from its saved trials, without rerunning anything")
    parser.add_argument("--models", nargs="+", help="only these model labels of the suite")
    parser.add_argument("--datasets", nargs="+", help="only these datasets of the suite")
    parser.add_argument("--seeds", nargs="+", type=_seed, help="replace the suite's seeds")
    parser.add_argument("--tune", action="store_true",
                        help="search hyperparameters on validation first (the suite's tune: section and bench/spaces.yaml), "
                             "then retrain the best configuration of each model x dataset with every seed and test it")
    parser.add_argument("--train-budget", type=float, metavar="MINUTES",
                        help="cap every trial's training at MINUTES of wall-clock time (best validation checkpoint kept; "
                             "recorded as training.max_minutes). For CPU runs of suites meant for a GPU")
    parser.add_argument("--resume", nargs="?", const="latest", metavar="RUN_DIR",
                        help="continue an interrupted run (default: the latest run of the suite); finished trials are kept")
    parser.add_argument("--address", help="Ray cluster to use, e.g. auto or ray://host:10001 (default: start a local Ray)")
    parser.add_argument("--no-ray", action="store_true",
                        help="run the trials one after another in this process instead of through Ray Tune (a machine "
                             "without Ray, or debugging); same run folder, --resume and reports")
    parser.add_argument("--data-root", help="folder with the datasets (default: $DRBENCH_DATA, else ../shared/data, else the user cache)")
    parser.add_argument("--dataset-card", action="append", default=[], metavar="FILE",
                        help="register the named dataset of a dataset card (YAML, as in datasets/; repeatable); "
                             "pass it again with --resume")
    parser.add_argument("--results-dir", default=str(ROOT / "results"), help="where runs are written (default: results/)")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="with --download: accept a file for which no published checksum is known (its sha256 is printed)")
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE.py|MODULE",
                        help="import your own model code first (a .py file or package.module that registers models with "
                             "@register_model; repeatable; see docs/plugins.md); pass it again with --resume")
    parser.add_argument("--export-split", metavar="DIR",
                        help="with --suite S --datasets D: write the split the suite uses (training sequences, validation and "
                             "test inputs and targets, raw and internal ids, fingerprint) as TSV files and a manifest.json into "
                             "DIR, for models trained elsewhere (docs/own-predictions.md)")
    parser.add_argument("--score", metavar="FILE",
                        help="with --suite S --datasets D --label NAME: evaluate a file of ranked lists (one line per test user, "
                             "the export's raw ids, best first) on that split as one trial, in a new run folder or, with "
                             "--resume RUN_DIR, next to that run's models (docs/own-predictions.md)")
    parser.add_argument("--label", metavar="NAME", help="with --score: the external model's name in the tables")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and Ray's own logs")
    return parser.parse_args(argv)


def select_part(suite, args):
    """Apply --models/--seeds to a suite, rejecting labels it does not contain: the part of it this invocation runs."""
    if args.models:
        labels = [m.label for m in suite.models]
        unknown = [m for m in args.models if m not in labels]
        if unknown:
            raise DrbenchError(f"--models: {', '.join(unknown)} not in suite '{suite.name}'; its models are: {', '.join(labels)}")
        suite = replace(suite, models=[m for m in suite.models if m.label in args.models])
    if args.seeds:
        suite = replace(suite, seeds=list(args.seeds))
    return suite


def select(suite, args):
    """Apply --datasets and --train-budget to a suite, rejecting names it does not know."""
    if args.datasets:
        from bench.data import dataset_names

        for name in args.datasets:
            if name not in dataset_names() and ":" not in name:
                raise DrbenchError(f"--datasets: unknown dataset '{name}'; known datasets: {', '.join(dataset_names())}, "
                                   "or the name of a dataset card given with --dataset-card FILE")
        suite = replace(suite, datasets=list(args.datasets))
    if args.train_budget is not None:
        if args.train_budget <= 0:
            raise DrbenchError(f"--train-budget must be a positive number of minutes, got {args.train_budget}")
        budget = {"max_minutes": args.train_budget}
        suite = replace(suite, training={**suite.training, **budget},
                        models=[replace(m, training={**m.training, **budget}) for m in suite.models])
    return suite


def apply_fallbacks(suite, data_root: Path, echo=print):
    """Swap in a suite's declared fallback for each dataset whose files are absent, and say so."""
    from bench.data import dataset_available

    renamed = {}
    for name in suite.datasets:
        fallback = suite.fallbacks.get(name)
        if fallback and not dataset_available(name, data_root):
            echo(f"note: dataset '{name}' is not under the data root {data_root}; suite '{suite.name}' runs on "
                 f"'{fallback}' instead. To use {name}, point --data-root or DRBENCH_DATA at a folder that has it, "
                 f"or run: python run_bench.py --download {name}")
            renamed[name] = fallback
    models = [replace(m, datasets=[renamed.get(d, d) for d in m.datasets]) for m in suite.models]
    suite = replace(suite, datasets=[renamed.get(d, d) for d in suite.datasets], models=models)
    _resolve_labels(suite.datasets, data_root)
    return suite


def _resolve_labels(datasets, data_root: Path) -> None:
    """Give every csv:/seq: spec its safe label now (a missing or unreadable file fails here, before any run folder)."""
    from bench.data.registry import dataset_label

    seen = {}
    for name in datasets:
        label = dataset_label(name, data_root)
        if label in seen:
            raise DrbenchError(f"datasets '{seen[label]}' and '{name}' are the same data (label {label}); list it once")
        seen[label] = name


def command_suite(args) -> int:
    from dataclasses import asdict

    from bench.run.config import load_suite
    from bench.records.fingerprint import check_resume, extend_run, run_fingerprint
    from bench.run.latency_phase import pending_latency
    from bench.report.tables import terminal_table, write_tables
    from bench.records.run_dir import RunDir
    from bench.run.engine import create_run, driver_provenance, pending_specs, prepare_splits, run_suite, trial_specs
    from bench.data import resolve_data_root
    from bench.data.registry import portable_suite_config

    if args.no_ray and (args.tune or args.address):
        raise DrbenchError(f"--no-ray runs trials in this process; {'--tune needs Ray Tune' if args.tune else '--address names a Ray cluster'}. "
                           "Drop one of the two options.")
    data_root = resolve_data_root(args.data_root)
    # every model and seed of the suite, on the datasets run: a run started with --models or --seeds records them all,
    # so that later parts (--resume with other models) are checked against the settings the run began with
    whole = apply_fallbacks(select(load_suite(args.suite, args.plugin), args), data_root)
    suite = select_part(whole, args)
    if args.tune:
        from bench.run.sweep import check_spaces

        check_spaces(suite)  # a model without a search space stops --tune here, before any run folder
    results_root = Path(args.results_dir)
    run = None
    if args.resume:
        run = RunDir.latest(results_root, suite.name) if args.resume == "latest" else RunDir.open(Path(args.resume))
        if bool(run.metadata().get("tuned")) != args.tune:
            raise DrbenchError(f"--resume: {run.path} was started {'with' if not args.tune else 'without'} --tune; "
                               f"resume it {'with' if not args.tune else 'without'} --tune too")
    # Every data or protocol problem surfaces here, before a run folder is made.
    splits, described = prepare_splits(suite, data_root)
    fingerprint = run_fingerprint(suite, described, trial_specs(suite), args.tune)  # what this invocation runs
    if run is not None:
        check_resume(run, fingerprint)  # nothing is written before this passes
        # the suite as last run (its report settings and model order; the fingerprint check above vouches for its numbers)
        run.update_metadata(config=portable_suite_config(asdict(whole), data_root))
        if not args.tune and not pending_specs(suite, run) and not pending_latency(run):
            print(f"all {len(fingerprint['trials'])} trials of {run.path} are already finished; nothing to run.")
            print(terminal_table(write_tables(run), run.steps_frame()))
            print_report(run)
            return 0
        added = extend_run(run, fingerprint)
        if added:
            print(f"adding {len(added)} trial(s) to {run.path}")
        run.update_metadata(resumed=[*run.metadata().get("resumed", []), driver_provenance()], datasets=described)
    if run is None:
        whole_specs = {spec["key"]: spec for spec in [*trial_specs(whole), *trial_specs(suite)]}  # --seeds may go beyond the suite's
        run = create_run(results_root, suite, whole, data_root, described, trial_specs(suite), list(whole_specs.values()), args.tune)
    print(f"suite {suite.name}: {len(suite.datasets)} dataset(s) x {len(suite.models)} model(s) x {len(suite.seeds)} seed(s) -> {run.path}")
    specs = None
    if args.tune:
        from bench.run.sweep import tuned_specs

        specs = tuned_specs(suite, run, splits, args.address, args.debug, resume=bool(args.resume))
        print(f"retraining the best configurations: {len(specs)} trial(s)")
    if args.no_ray:
        from bench.run.local_backend import LocalBackend

        backend = LocalBackend()
    else:
        from bench.run.ray_backend import RayBackend

        backend = RayBackend(args.address, args.debug)
    failures = run_suite(suite, run, splits, backend, specs=specs)
    frame = run.trials_frame()
    print()
    print(terminal_table(frame, run.steps_frame()))
    print(f"results: {run.path / 'results.md'} and {run.path / 'trials.csv'}")
    print_report(run)
    if failures:
        failed = frame[frame["status"] != "ok"]
        print(f"\n{failures} trial(s) failed:", file=sys.stderr)
        for _, row in failed.iterrows():
            print(f"  {row['key']}: {row['error']}", file=sys.stderr)
        print(f"Fix the cause and rerun with --resume {run.path} to retry only the failed trials.", file=sys.stderr)
        return 1
    return 0


def command_predictions(args) -> int:
    """--export-split DIR and --score FILE: the suite's split as files, and lists made elsewhere scored on it (bench.run.external)."""
    from bench.data import resolve_data_root
    from bench.report.tables import terminal_table, write_tables
    from bench.run.config import load_suite
    from bench.run.external import export_split, score_lists

    option = "--export-split" if args.export_split else "--score"
    if not args.suite:
        raise DrbenchError(f"{option} needs --suite S and --datasets D: the suite and dataset whose split it is")
    if args.export_split and args.score:
        raise DrbenchError("--export-split and --score are two steps: export, make your lists from the export, then score them")
    if bool(args.score) != bool(args.label):
        raise DrbenchError("--score FILE needs --label NAME, the name of the external model in the tables" if args.score
                           else "--label names the model of --score FILE; add --score or drop --label")
    given = {"--models": args.models, "--seeds": args.seeds, "--tune": args.tune, "--train-budget": args.train_budget is not None}
    if args.export_split:
        given.update({"--resume": args.resume, "--address": args.address})
    for flag, used in given.items():
        if used:
            raise DrbenchError(f"{flag} does not apply to {option}, which trains no model of the suite; drop {flag}")
    if args.no_ray and args.address:
        raise DrbenchError("--no-ray runs the scoring in this process; --address names a Ray cluster. Drop one of the two options.")
    data_root = resolve_data_root(args.data_root)
    suite = select_part(apply_fallbacks(select(load_suite(args.suite, args.plugin), args), data_root), args)
    if args.export_split:
        export_split(suite, Path(args.export_split), data_root)
        return 0
    if args.no_ray:
        from bench.run.local_backend import LocalBackend

        backend = LocalBackend()
    else:
        from bench.run.ray_backend import RayBackend

        backend = RayBackend(args.address, args.debug)
    run, record = score_lists(suite, Path(args.score), args.label, data_root, Path(args.results_dir), backend, args.resume)
    print()
    print(terminal_table(write_tables(run), run.steps_frame()))
    print(f"results: {run.path / 'results.md'} and {run.path / 'trials.csv'}")
    print_report(run)
    if record["status"] != "ok":
        print(f"scoring failed: {record['key']}: {record['error']}", file=sys.stderr)
        return 1
    return 0


def command_list_datasets(args) -> int:
    from tabulate import tabulate

    from bench.data import describe_datasets, resolve_data_root

    root = resolve_data_root(args.data_root)
    print(f"data root: {root}")
    rows = describe_datasets(root)
    headers = ["dataset", "users", "items", "interactions", "mean len", "median len", "density", "timestamps", "repeats dropped"]
    table = [[r["name"], f"{r['users']:,}", f"{r['items']:,}", f"{r['interactions']:,}", f"{r['mean_len']:.1f}",
              f"{r['median_len']:.0f}", f"{r['density']:.4%}", "yes" if r["has_timestamps"] else "no", _dedup_cell(r)]
             for r in rows if "users" in r]
    print(tabulate(table, headers=headers, tablefmt="simple"))
    print("repeats dropped: repeated (user, item) interactions removed by the default dedup (first occurrence kept); "
          "a suite's protocol.dedup: keep keeps them")
    for row in rows:
        if "users" not in row:
            print(f"not available: {row['name']}: {row.get('missing', '')}")
    return 0


def _dedup_cell(row: dict) -> str:
    dedup = next((step for step in row.get("steps", ()) if step["step"] == "dedup"), None)
    if dedup is None:
        return "-"  # the built-in dataset is generated without preprocessing
    return f"{dedup['dropped']:,}" if dedup["policy"] != "keep" else f"0 (keeps {dedup['repeats']:,})"


def command_list_models(args) -> int:
    from dataclasses import fields

    from bench.models.base import model_entry, model_names
    from bench.plugins import load_plugins

    load_plugins(args.plugin)
    width = max(map(len, model_names()))
    for name in model_names():
        entry = model_entry(name)
        defaults = ", ".join(f"{f.name}={f.default!r}" for f in fields(entry.config_class))
        print(f"{name:{width}s}  {defaults or '(no hyperparameters)'}")
        for family, values in entry.family_defaults.items():
            print(f"{'':{width}s}    on {family}: " + ", ".join(f"{k}={v!r}" for k, v in values.items()))
    return 0


def command_download(args) -> int:
    from bench.data import download, resolve_data_root

    download(args.download, resolve_data_root(args.data_root), allow_unverified=args.allow_unverified)
    return 0


def print_report(run) -> None:
    """Paper tables and figures into <run>/report/ (see bench/report/paper.py)."""
    from bench.report.paper import write_report

    out = write_report(run)
    print(f"report (tables in Markdown, LaTeX and CSV; figures in PNG and PDF): {out / 'report.md'}")


def command_report(args) -> int:
    from bench.report.tables import terminal_table, write_tables
    from bench.records.run_dir import RunDir

    run = RunDir.open(Path(args.report))
    print(terminal_table(write_tables(run), run.steps_frame()))
    print_report(run)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from bench.data.registry import use_dataset_cards

        use_dataset_cards(args.dataset_card)  # before anything looks a dataset name up
        if args.export_split or args.score or args.label:
            return command_predictions(args)
        if args.suite:
            return command_suite(args)
        if args.list_datasets:
            return command_list_datasets(args)
        if args.list_models:
            return command_list_models(args)
        if args.download:
            return command_download(args)
        return command_report(args)
    except DrbenchError as error:
        if args.debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; finished trials are saved. Continue with --resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
