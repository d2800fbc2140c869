"""Plugins: a user's own model code, imported before a suite is resolved, by the driver and by every worker.

A plugin is a Python file (``path/to/my_model.py``) or an importable module
(``my_package.models``) whose import registers models with
``bench.models.base.register_model``; ``run_bench.py --plugin`` and a suite's
``plugins:`` key name them. A file is imported under its stem
(``my_model``): the name under which Ray's ``py_modules`` puts it on a
worker's path and under which the pickle of a trained model refers to its
class, so every process imports the same code by the same name and no
absolute path of this machine is recorded. Each plugin's sha256 (of the file,
or of every ``.py`` file of the top-level package) travels in the trial specs
and the run's fingerprint: a worker refuses code that differs from the
driver's, and ``--resume`` refuses a plugin that changed since the run began.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from bench.errors import DrbenchError


@dataclass(frozen=True)
class Plugin:
    module: str  # its import name, the same in every process
    source: str  # as recorded: the file relative to the current folder (else its name), or the module name
    sha256: str  # of the code shipped to the workers


# module name -> sha256 of the code this process imported under it: what a trial compares with its spec
_IMPORTED: dict[str, str] = {}
# module name -> the file this process imported it from (file plugins only)
_FILES: dict[str, Path] = {}


def is_file_reference(reference: str) -> bool:
    return reference.endswith(".py") or "/" in reference or "\\" in reference


def load_plugins(references: Iterable[str], folder: Path | None = None, where: str = "--plugin") -> list[Plugin]:
    """Import each plugin (a file, relative to ``folder``, default the current folder; or a module name).

    Built-in models are registered first, so a name clash is reported
    against the plugin. ``where`` names the origin in error messages.
    """
    from bench.models.base import model_names

    model_names()
    plugins, files = [], {}
    for reference in references:
        if not is_file_reference(reference):
            plugins.append(_load_module(reference))
            continue
        path = ((folder or Path.cwd()) / reference).resolve()
        first, first_path = files.setdefault(path.stem, (reference, path))
        if first_path != path:
            raise DrbenchError(f"{where}: plugins {first} and {reference} would both be imported as module '{path.stem}'; "
                               "rename one of the files")
        plugins.append(_load_file(reference, path, folder, where))
    return merged(plugins)


def merged(*groups: Iterable[Plugin]) -> list[Plugin]:
    """The plugins of several lists, each once, in order; two different codes under one module name are an error."""
    by_module: dict[str, Plugin] = {}
    for group in groups:
        for plugin in group:
            known = by_module.setdefault(plugin.module, plugin)
            if known != plugin:
                raise DrbenchError(f"two different plugins would be imported as module '{plugin.module}': {known.source} "
                                   f"(sha256 {known.sha256[:12]}) and {plugin.source} (sha256 {plugin.sha256[:12]}); "
                                   "rename one of the files")
    return list(by_module.values())


def _load_file(reference: str, path: Path, folder: Path | None, where: str) -> Plugin:
    from bench.data.registry import portable_file

    name = path.stem
    if path.suffix != ".py" or not name.isidentifier():
        raise DrbenchError(f"{where}: plugin {reference} must be a .py file whose name is a Python identifier "
                           "(letters, digits, underscores), or a module name such as my_package.models")
    if not path.is_file():
        relative = f" (relative to {folder})" if folder is not None and not Path(reference).is_absolute() else ""
        raise DrbenchError(f"{where}: plugin file {reference}{relative} does not exist")
    source = portable_file(path)
    other = _origin(name)
    if name not in _FILES and other is not None and other != path:
        raise DrbenchError(f"{where}: plugin {source} would be imported as '{name}', which is already a Python module "
                           f"here ({other}); rename the file")
    digest = code_sha256(path)
    if _FILES.get(name) == path and _IMPORTED.get(name) == digest and name in sys.modules:
        return Plugin(name, source, digest)  # already imported, unchanged (e.g. named by --plugin and the suite)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before executing it, as `import` does: pickles and dataclasses look it up there
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[name]
        raise _import_error(source, path, error) from error
    _FILES[name], _IMPORTED[name] = path, digest
    return Plugin(name, source, digest)


def _load_module(name: str) -> Plugin:
    if not all(part.isidentifier() for part in name.split(".")):
        raise DrbenchError(f"--plugin {name}: a plugin is a .py file or a module name such as my_package.models")
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name and (name == error.name or name.startswith(error.name + ".")):
            raise DrbenchError(f"plugin {name}: no module named '{error.name}' here; a module plugin must be importable "
                               "(installed, or its folder on PYTHONPATH), and a file plugin ends in .py") from error
        raise _import_error(name, _origin(name.partition(".")[0]), error) from error
    except Exception as error:
        raise _import_error(name, _origin(name.partition(".")[0]), error) from error
    # a module is imported once per process: its digest is that of the code imported then
    if name not in _IMPORTED:
        _IMPORTED[name] = code_sha256(shipped_path(module.__name__))
    return Plugin(name, name, _IMPORTED[name])


def _origin(top: str) -> Path | None:
    """Where the top-level module ``top`` is (its file, or its package folder) without importing it; None if nowhere."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):  # a module in sys.modules without a spec (e.g. __main__)
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]).resolve()
    return Path(spec.origin).resolve() if spec.origin and spec.has_location else None


def _import_error(source: str, root: Path | None, error: BaseException) -> DrbenchError:
    """One line: the plugin, where in its code the import failed, and the exception's last line."""
    if isinstance(error, DrbenchError):  # raised by drbench during the import, e.g. a model name registered twice
        return DrbenchError(f"plugin {source}: {error}")
    frames = [(frame.filename, frame.lineno) for frame in traceback.extract_tb(error.__traceback__)]
    if isinstance(error, SyntaxError) and error.filename:
        frames.append((error.filename, error.lineno))
    inside = [(file, line) for file, line in frames if root is not None and _under(Path(file), root)]
    at = f" at {Path(inside[-1][0]).name} line {inside[-1][1]}" if inside else ""
    last_line = traceback.format_exception_only(type(error), error)[-1].strip()
    return DrbenchError(f"plugin {source} failed to import{at}: {last_line} (--debug shows the traceback)")


def _under(path: Path, root: Path) -> bool:
    try:
        return path.resolve() == root or path.resolve().is_relative_to(root)
    except OSError:
        return False


def shipped_path(module: str) -> Path:
    """What carries a plugin's code to the workers: the file of a single-file module, else its top-level package folder."""
    top = sys.modules[module.partition(".")[0]]
    if not hasattr(top, "__path__"):
        return Path(top.__file__).resolve()
    folders = list(top.__path__)
    if len(folders) != 1:
        raise DrbenchError(f"plugin {module}: its package {top.__name__} spans {len(folders)} folders "
                           f"({', '.join(folders)}); Ray can ship a package of one folder only")
    return Path(folders[0]).resolve()


def code_sha256(path: Path) -> str:
    """sha256 of a file, or of every .py file under a folder (with its relative path, in a fixed order)."""
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
        return digest.hexdigest()
    for file in sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def ship_paths(plugins: Iterable[Plugin]) -> list[str]:
    """Ray's ``py_modules`` for the plugins (each imported here): the workers import them by the same names."""
    return list(dict.fromkeys(str(shipped_path(plugin.module)) for plugin in plugins))


def import_plugins(plugins: Iterable[dict]) -> None:
    """Import a trial spec's plugins (``{module, source, sha256}``) in this process, a worker or the driver.

    Before a model is built or unpickled. Code that differs from the
    driver's (another module of the same name first on this worker's path)
    is an error rather than a silently different model.
    """
    for plugin in plugins:
        name = plugin["module"]
        if name not in _IMPORTED:
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as error:
                raise DrbenchError(f"plugin {plugin['source']} is not importable as '{name}' on this worker ({error}); "
                                   "it reaches Ray's workers through the runtime_env py_modules that run_bench.py sets") from error
            _IMPORTED[name] = code_sha256(shipped_path(name))
        if _IMPORTED[name] != plugin["sha256"]:
            raise DrbenchError(f"plugin {plugin['source']}: the code imported as '{name}' here (sha256 {_IMPORTED[name][:12]}) "
                               f"is not the driver's (sha256 {plugin['sha256'][:12]}); rename the plugin or remove the other "
                               f"module '{name}' from this machine's Python path")
