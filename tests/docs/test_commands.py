"""Every command shown in README.md and docs/*.md is run, or is covered by a named test, or says why not.

The convention, for fenced code blocks whose info string is ``sh`` or ``bash``: the
nearest non-blank line above the opening fence is one marker comment.

    <!-- cheap -->                 every command of the block is run here, from the
                                   repository root, and must exit with status 0
    <!-- cheap: needs data -->     the same, skipped when the data root (the dataset
                                   mirror) is absent
    <!-- covered -->               every command of the block is a key of COVERED below,
                                   which names the test (or CI step) that runs it; text
                                   after "covered:" is for the reader
    <!-- not run: REASON -->       shown only; REASON says why (a GPU, a cluster, hours
                                   of training, the network)

A block's commands are its lines, with ``\\`` continuations joined, ``# comments`` and
blank lines dropped, and ``a && b`` split into ``a`` and ``b``. Cheap commands must be
``python run_bench.py ...`` or ``python -m ...``; ``python`` becomes this interpreter.
Inline code spans that look like commands (``python ...``, ``bash ...``, ``pip ...``,
``ray ...``) must be commands of some block, so nothing is shown without a status.
Other blocks (``text``, ``yaml``) are output or configuration and are not checked.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 120
SHELL_INFO = {"sh", "bash"}
CHEAP_PREFIXES = ("python run_bench.py", "python -m ")
COMMAND_WORDS = ("python ", "python3 ", "bash ", "pip ", "ray ")

# Commands shown in `<!-- covered -->` blocks, each with what runs it: "path::test_name"
# (the path as of writing; the name is looked up under tests/ if the file has moved), or
# a file that contains the command itself (".ci/run", CI's install-and-test step).
COVERED: dict[str, tuple[str, ...]] = {
    "pip install -r requirements.txt": (".ci/run",),
    "python -m pytest -q": (".ci/run",),
    "python run_bench.py --suite smoke": (
        "tests/test_run_bench.py::test_smoke_suite_runs_every_model_and_sasrec_clearly_beats_pop",
        "tests/test_run_bench.py::test_smoke_falls_back_to_synthetic_data_loudly_when_movielens_is_absent",
    ),
    "python run_bench.py --suite smoke --models sasrec --seeds 0 1 2": (
        "tests/test_run_bench.py::test_no_ray_runs_the_same_trials_in_process_where_ray_is_missing",
        "tests/test_run_bench.py::test_a_seed_that_is_not_an_integer_is_one_line",
    ),
    "python run_bench.py --suite beauty-cpu --train-budget 5": (
        "tests/test_run_bench.py::test_train_budget_caps_every_model_and_rejects_nonsense",
    ),
    'python run_bench.py --suite smoke --datasets "seq:my data/sequences.txt"': (
        "tests/test_run_bench.py::test_a_seq_file_by_absolute_path_with_special_characters_runs_without_ray",
        "tests/test_run_bench.py::test_a_seq_file_by_absolute_path_with_special_characters_runs_through_ray",
    ),
    'python run_bench.py --suite smoke --datasets "csv:log.csv?user=uid&item=iid&time=ts"': (
        "tests/test_datasets.py::test_csv_with_configurable_columns",
    ),
    'python run_bench.py --suite smoke --datasets "recbole:shop/shop.inter"': (
        "tests/data/test_own_data_runs.py::test_a_recbole_file_runs_by_its_spec_like_a_csv_file",
    ),
    "python run_bench.py --suite smoke --dataset-card my-shop.yaml --datasets my-shop": (
        "tests/data/test_own_data_runs.py::test_a_card_outside_the_repository_runs_and_is_recorded_without_machine_paths",
    ),
    "python run_bench.py --suite smoke --dataset-card my-shop.yaml --datasets my-shop --resume": (
        "tests/data/test_own_data_runs.py::test_resume_needs_the_card_again_and_then_has_nothing_to_do",
        "tests/data/test_own_data_runs.py::test_resume_refuses_a_card_that_changes_the_data_and_accepts_one_that_only_changes_words",
    ),
    "python run_bench.py --suite baselines --tune": (
        "tests/test_sweep.py::test_sweep_on_ml100k_retrains_the_best_configuration_with_every_seed_and_resumes",
    ),
    "python run_bench.py --suite baselines --tune --resume": (
        "tests/test_sweep.py::test_sweep_on_ml100k_retrains_the_best_configuration_with_every_seed_and_resumes",
    ),
    "python run_bench.py --report results/smoke/<run-id>": (
        "tests/test_run_bench.py::test_tiny_suite_runs_through_ray_and_resume_redoes_nothing",
        "tests/test_fingerprint.py::test_report_refuses_a_run_that_mixes_two_protocols",
    ),
    "python run_bench.py --suite smoke --resume": (
        "tests/test_run_bench.py::test_tiny_suite_runs_through_ray_and_resume_redoes_nothing",
    ),
    "python run_bench.py --suite smoke --resume results/smoke/<run-id>": (
        "tests/test_fingerprint.py::test_resume_with_the_same_settings_continues_the_run",
        "tests/test_tune_runner.py::test_sigkill_mid_trial_then_resume_finishes_every_trial_exactly_once",
    ),
    "python run_bench.py --suite examples/item_knn.yaml": (
        "tests/examples/test_item_knn.py::test_the_example_runs_through_ray_from_a_folder_outside_the_repository",
        "tests/examples/test_item_knn.py::test_the_example_suite_names_its_plugin_relative_to_itself_and_falls_back_to_synthetic",
    ),
    "python run_bench.py --suite my-suite.yaml --plugin my_model.py": (
        "tests/test_plugins.py::test_a_run_records_its_plugins_without_machine_paths_and_resume_refuses_a_changed_plugin",
    ),
    "python run_bench.py --suite my-suite.yaml --plugin my_model.py --resume": (
        "tests/test_plugins.py::test_a_run_records_its_plugins_without_machine_paths_and_resume_refuses_a_changed_plugin",
    ),
    "python run_bench.py --suite smoke --datasets ml-100k --export-split my-split": (
        "tests/run/test_external.py::test_from_a_folder_outside_the_repository_through_ray_to_the_report",
        "tests/run/test_external.py::test_export_refuses_a_folder_holding_something_else_and_rewrites_its_own",
    ),
    "python my_popularity.py my-split pop.tsv": (
        "tests/run/test_external.py::test_from_a_folder_outside_the_repository_through_ray_to_the_report",
    ),
    "python run_bench.py --suite smoke --datasets ml-100k --score pop.tsv --label my-pop": (
        "tests/run/test_external.py::test_from_a_folder_outside_the_repository_through_ray_to_the_report",
        "tests/run/test_external.py::test_a_bad_file_is_one_line_exit_2_and_nothing_written",
    ),
    "python run_bench.py --suite smoke --datasets ml-100k --score pop.tsv --label my-pop --resume results/smoke/<run-id>": (
        "tests/run/test_external.py::test_scored_popularity_lists_get_exactly_the_harness_pops_metrics",
        "tests/run/test_external.py::test_a_run_of_another_protocol_is_refused",
    ),
}

MARKER = re.compile(r"^<!--\s*(cheap|covered|not run)\s*(?::\s*(.*?))?\s*-->$")
FENCE = re.compile(r"^(```+|~~~+)\s*([^\s`]*)")


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository root
    line: int  # line of the opening fence, 1-based
    info: str
    marker: str | None  # cheap | covered | not run | None
    note: str  # the text after "marker:"
    commands: tuple[str, ...]


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def block_commands(lines: list[str]) -> tuple[str, ...]:
    joined, current = [], ""
    for raw in lines:
        line = raw.strip() if current else raw.rstrip()
        if line.endswith("\\"):
            current += line[:-1].rstrip() + " "
            continue
        joined.append(current + line)
        current = ""
    if current:
        joined.append(current)
    commands = []
    for line in joined:
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            commands.extend(part.strip() for part in re.split(r"\s&&\s", line) if part.strip())
    return tuple(commands)


def parse(path: Path) -> tuple[list[Block], str]:
    """The fenced blocks of a Markdown file, and its text outside fenced blocks."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks, prose, i = [], [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i].strip())
        if not opening:
            prose.append(lines[i])
            i += 1
            continue
        fence, info, start = opening.group(1), opening.group(2).lower(), i
        i += 1
        body = []
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        above = next((line.strip() for line in reversed(lines[:start]) if line.strip()), "")
        found = MARKER.match(above)
        blocks.append(Block(doc=str(path.relative_to(ROOT)), line=start + 1, info=info,
                            marker=found.group(1) if found else None, note=(found.group(2) or "") if found else "",
                            commands=block_commands(body) if info in SHELL_INFO else ()))
    return blocks, "\n".join(prose)


def shell_blocks() -> list[Block]:
    return [b for path in documents() if path.exists() for b in parse(path)[0] if b.info in SHELL_INFO]


def cheap_commands() -> list[tuple[Block, str]]:
    return [(b, c) for b in shell_blocks() if b.marker == "cheap" for c in b.commands]


def data_root_present() -> bool:
    try:
        from bench.data import resolve_data_root

        root = Path(resolve_data_root())
    except Exception:  # the harness cannot say: look where it would
        root = Path(os.environ.get("DRBENCH_DATA") or ROOT.parent / "shared" / "data")
    return root.is_dir() and any(root.iterdir())


def test_the_documents_exist_and_show_commands():
    assert (ROOT / "README.md").exists()
    assert shell_blocks(), "no sh/bash block found in README.md or docs/*.md"
    assert cheap_commands(), "no <!-- cheap --> command: at least the CLI's --help should be run"


def test_every_command_block_says_whether_it_is_run():
    problems = []
    for block in shell_blocks():
        where = f"{block.doc}:{block.line}"
        if block.marker is None:
            problems.append(f"{where}: no <!-- cheap -->, <!-- covered --> or <!-- not run: reason --> above the block")
        elif block.marker == "not run" and not block.note:
            problems.append(f"{where}: <!-- not run --> needs a reason: <!-- not run: why -->")
        elif block.marker == "cheap" and block.note not in ("", "needs data"):
            problems.append(f"{where}: unknown cheap option '{block.note}' (only 'needs data')")
        if not block.commands:
            problems.append(f"{where}: a {block.info} block without a command; use ```text for output")
    assert not problems, "\n".join(problems)


def test_cheap_commands_are_cli_commands():
    wrong = [f"{b.doc}:{b.line}: {c}" for b, c in cheap_commands() if not c.startswith(CHEAP_PREFIXES)]
    assert not wrong, "cheap commands must start with " + " or ".join(CHEAP_PREFIXES) + ":\n" + "\n".join(wrong)


@pytest.mark.parametrize("block, command", cheap_commands(), ids=[c for _, c in cheap_commands()])
def test_cheap_command_exits_0(block, command):
    if block.note == "needs data" and not data_root_present():
        pytest.skip(f"{command}: needs the dataset mirror, and the data root is absent")
    argv = shlex.split(command)
    argv[0] = sys.executable
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{block.doc}:{block.line}: `{command}` ran over {TIMEOUT_S} s; a cheap command must be quick")
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, f"{block.doc}:{block.line}: `{command}` exited {done.returncode}:\n{tail}"
    assert done.stdout.strip(), f"{block.doc}:{block.line}: `{command}` printed nothing"


def test_covered_commands_are_named_in_the_mapping():
    missing = [f"{b.doc}:{b.line}: {c}" for b in shell_blocks() if b.marker == "covered"
               for c in b.commands if c not in COVERED]
    assert not missing, "commands in <!-- covered --> blocks that COVERED does not map to a test:\n" + "\n".join(missing)


def test_the_mapping_has_no_stale_entries():
    shown = {c for b in shell_blocks() if b.marker == "covered" for c in b.commands}
    stale = sorted(set(COVERED) - shown)
    assert not stale, "COVERED maps commands that no <!-- covered --> block shows any more:\n" + "\n".join(stale)


def _test_exists(target: str) -> bool:
    path, _, name = target.partition("::")
    named = ROOT / path
    if named.is_file():
        return re.search(rf"^\s*(async\s+)?def {re.escape(name)}\(", named.read_text(encoding="utf-8"), re.M) is not None
    pattern = re.compile(rf"^\s*(async\s+)?def {re.escape(name)}\(", re.M)
    return any(pattern.search(f.read_text(encoding="utf-8")) for f in (ROOT / "tests").rglob("*.py"))


@pytest.mark.parametrize("command", sorted(COVERED))
def test_covering_tests_exist(command):
    for target in COVERED[command]:
        if "::" in target:
            assert _test_exists(target), f"`{command}` is mapped to {target}, which is not a test under tests/"
        else:
            script = ROOT / target
            assert script.is_file(), f"`{command}` is mapped to {target}, which does not exist"
            assert command in script.read_text(encoding="utf-8"), f"{target} does not run `{command}`"


def test_inline_commands_are_shown_in_a_block():
    block_commands_shown = {c for b in shell_blocks() for c in b.commands}
    loose = []
    for path in documents():
        if not path.exists():
            continue
        _, prose = parse(path)
        for span in re.findall(r"`([^`]+)`", prose):
            span = " ".join(span.split())
            if span.startswith(COMMAND_WORDS) and span not in block_commands_shown:
                loose.append(f"{path.relative_to(ROOT)}: `{span}`")
    assert not loose, ("inline commands that no sh/bash block shows (put them in a marked block, "
                       "or write the option alone):\n" + "\n".join(loose))


def test_no_absolute_machine_paths_in_the_documents():
    # top-level folders that only a particular machine has; a path under one of them names that machine
    machine_roots = "|".join(("work", "home", "Users", "tmp", "root"))
    pattern = re.compile(rf"(?<![\w.])(/({machine_roots})/|[A-Z]:\\)")
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in documents() if path.exists()
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert not found, "absolute paths of a machine in the documents:\n" + "\n".join(found)
