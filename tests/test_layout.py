"""The house: no import cycle between modules or packages, and no package that shadows a well-known one."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bench", "baselines", "diffusion")


def project_modules() -> dict[str, Path]:
    files = [p for package in PACKAGES for p in (ROOT / package).rglob("*.py")] + [ROOT / "run_bench.py"]
    modules = {}
    for path in files:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports, counting imports inside functions too."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                imported |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
        graph[name] = {m for m in imported if m in modules and m != name}
    return graph


def package_of(module: str) -> str:
    """bench.run.engine -> bench.run; baselines.sasrec -> baselines; bench.errors -> bench.errors."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "bench" and len(parts) > 2 else parts[0] if parts[0] != "bench" else module


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph, or None."""
    state, path = {}, []

    def visit(node):
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) is None


def test_no_module_imports_itself_through_others():
    assert cycle(import_graph()) is None


def test_sub_packages_depend_on_each_other_in_one_direction():
    packages = {}
    for module, imported in import_graph().items():
        packages.setdefault(package_of(module), set()).update(package_of(m) for m in imported if package_of(m) != package_of(module))
    assert cycle(packages) is None
    # the flow of the tree: reports read records and never run anything; the protocol never imports a model
    assert not packages["bench.report"] & {"bench.run", "baselines", "diffusion"}
    assert not packages["bench.protocol"] & {"bench.models", "bench.run", "bench.report", "baselines", "diffusion"}
    assert not packages["bench.records"] & {"bench.run", "bench.report", "bench.protocol"}


def run_from_the_repository(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_hugging_face_datasets_is_not_shadowed_by_the_repository():
    # Hugging Face `datasets` is in requirements.txt so that this runs where ML environments have it
    done = run_from_the_repository("import datasets; print(datasets.__file__); print(datasets.Dataset.__name__)")
    assert done.returncode == 0, done.stderr
    location, name = done.stdout.split()
    assert not Path(location).resolve().is_relative_to(ROOT) and name == "Dataset"


def test_text_semantic_ids_and_the_dataset_list_work_beside_hugging_face_datasets(tmp_path):
    done = run_from_the_repository(
        "import datasets, sentence_transformers\n"
        "from bench.models.semantic_ids import SemanticIdConfig, build_semantic_ids\n"
        "texts = [''] + [f'movie {i}. Genres: ' + ('Drama' if i % 2 else 'Comedy') for i in range(1, 41)]\n"
        "ids = build_semantic_ids(SemanticIdConfig(sid_source='text', levels=2, codebook_size=8, pca_dim=8), 40,\n"
        f"                        texts=texts, cache_dir={str(tmp_path)!r})\n"
        "print(ids.codes.shape)"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "(41, 3)"  # two digits and the disambiguation digit
    listing = subprocess.run([sys.executable, "run_bench.py", "--list-datasets", "--data-root", str(tmp_path)], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0 and "synthetic" in listing.stdout, listing.stderr
