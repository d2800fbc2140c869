"""The named datasets, where their files live, and how they are loaded.

Each dataset is a card (``bench/data/cards.py``) in the repository's
``datasets/`` folder or given with ``--dataset-card`` (one YAML file: name,
description, family, and its possible source files under the data root,
best first, each with its reader, reader options and official download
location and checksum); adding a dataset is adding a card. The first source
present is used (``InteractionData.source`` and every result row record
which); ``--download`` fetches the official one. Files without a card:
``csv:``, ``seq:`` and ``recbole:`` specs (``_custom_source``).

Data root: ``--data-root`` > ``$DRBENCH_DATA`` > ``../shared/data`` next to
the repository > ``~/.cache/drbench/data``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import urllib.parse
from pathlib import Path

import numpy as np

from bench.errors import DrbenchError
from bench.data.cards import DatasetEntry, load_card, load_cards
from bench.data.interactions import InteractionData, PreprocessConfig, dataset_stats, preprocess
from bench.data.readers import READERS
from bench.data.sequences import Sequences

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_FORMAT = 2  # bump when preprocessing changes what a cached file contains



CARDS_DIR = REPO_ROOT / "datasets"  # one YAML card per dataset: adding a dataset is adding a card
BUILT_IN: dict[str, DatasetEntry] = load_cards(CARDS_DIR)
REGISTRY: dict[str, DatasetEntry] = dict(BUILT_IN)  # and the cards of this command (use_dataset_cards)
SYNTHETIC = "synthetic"
CUSTOM_PREFIXES = ("csv:", "seq:", "recbole:")
_USER_CARDS: set[str] = set()


def use_dataset_cards(paths) -> list[DatasetEntry]:
    """Register the ``--dataset-card`` files of this command, each checked, none clashing with another name.

    The cards of an earlier command in this process are dropped first, so each
    command sees the built-in cards and its own. A card is recorded by its path
    relative to the current folder when under it, else by its file name.
    """
    for name in _USER_CARDS:
        REGISTRY.pop(name, None)
    _USER_CARDS.clear()
    entries: dict[str, tuple[Path, int, DatasetEntry]] = {}
    for path in map(Path, paths):
        order, entry = load_card(path, portable_file(os.path.abspath(path)))
        if entry.name in BUILT_IN or entry.name == SYNTHETIC:
            raise DrbenchError(f"dataset card {path}: the name '{entry.name}' is a built-in dataset's; give the card another name")
        if entry.name in entries:
            raise DrbenchError(f"dataset cards {entries[entry.name][0]} and {path} both name the dataset '{entry.name}'; rename one")
        entries[entry.name] = (path, order, entry)
    added = [entry for _, _, entry in sorted(entries.values(), key=lambda card: (card[1], card[2].name))]
    REGISTRY.update({entry.name: entry for entry in added})  # after the built-in datasets, in the cards' order
    _USER_CARDS.update(entries)
    return added


def dataset_names() -> list[str]:
    return list(REGISTRY) + [SYNTHETIC]


def dataset_family(name: str) -> str:
    """The card's family ("movielens", "amazon"), else "other": models keep per-family default hyperparameters."""
    entry = REGISTRY.get(name)
    return entry.family if entry is not None else "other"


def default_cache_dir() -> Path:
    return Path(os.environ.get("DRBENCH_CACHE", REPO_ROOT / ".cache" / "datasets"))


def resolve_data_root(flag: str | None = None) -> Path:
    if flag:
        root = Path(flag).expanduser()
        if not root.is_dir():
            raise DrbenchError(f"--data-root {flag}: no such folder")
        return root
    if os.environ.get("DRBENCH_DATA"):
        root = Path(os.environ["DRBENCH_DATA"]).expanduser()
        if not root.is_dir():
            raise DrbenchError(f"DRBENCH_DATA={root}: no such folder; unset it or point it at the data folder")
        return root
    mirror = REPO_ROOT.parent / "shared" / "data"
    if mirror.is_dir():
        return mirror
    return Path.home() / ".cache" / "drbench" / "data"


def file_checksum(path: Path, algorithm: str = "sha256") -> str:
    from bench.data.readers import unreadable_file_error

    digest = hashlib.new(algorithm)
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as error:
        raise unreadable_file_error(Path(path), error) from None
    return digest.hexdigest()


def _missing_message(entry: DatasetEntry, root: Path) -> str:
    lines = [f"dataset '{entry.name}' ({entry.description}): no source file found under the data root {root}."]
    lines.append("Put one of these files there (the first present is used):")
    for source in entry.sources:
        origin = ""
        if source.official:
            origin = f"  [official: {source.official.url}" + (f", file {source.official.member} in the zip" if source.official.member else "") + "]"
        lines.append(f"  {source.file(root)}{origin}")
    if any(s.official for s in entry.sources):
        lines.append(f"Fetch the official file with: python run_bench.py --download {entry.name} --data-root {root}")
    lines.append("Or point the harness at the folder that has it: --data-root DIR or DRBENCH_DATA=DIR.")
    return "\n".join(lines)


def _split_location(rest: str, root: Path | None) -> tuple[str, str]:
    """(path, options) of ``<path>[?options]``; a path may itself contain ``?``: the longest prefix that is an
    existing file (as given, or under the data root) is the path, else everything before the first ``?``."""
    marks = [i for i, char in enumerate(rest) if char == "?"]
    for end in [len(rest)] + marks[::-1]:
        candidate = Path(rest[:end])
        if candidate.exists() or (root is not None and not candidate.is_absolute() and (root / candidate).exists()):
            return rest[:end], rest[end + 1:]
    location, _, query = rest.partition("?")
    return location, query


def _custom_source(name: str, root: Path | None = None) -> tuple[Path, str, dict]:
    """``csv:<path>[?user=..&item=..&time=..&rating=..&sep=..]``, ``recbole:<path>.inter[?same options]`` or ``seq:<path>``."""
    kind, _, rest = name.partition(":")
    location, query = _split_location(rest, root)
    options = dict(urllib.parse.parse_qsl(query))
    if kind == "seq":
        if options:
            raise DrbenchError(f"dataset '{name}': seq:<path> takes no options")
        return Path(location), "sequences", {}
    if kind == "recbole" and not location.endswith((".inter", ".inter.gz")):
        raise DrbenchError(f"dataset '{name}': recbole:<path> names a RecBole interaction file, <name>.inter "
                           "(.user and .item files hold features, not interactions)")
    known = {"user": "user_col", "item": "item_col", "time": "time_col", "rating": "rating_col", "sep": "sep"}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DrbenchError(f"dataset '{name}': unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    args = {known[key]: value for key, value in options.items()}
    if "time" in options:
        args["require_time"] = True
    return Path(location), "recbole-inter" if kind == "recbole" else "interaction-csv", args


def _portable_path(path: Path, root: Path) -> str:
    """``path`` relative to the data root when under it, else its file name: never a machine's absolute path."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return Path(path).name


def _not_a_file(name: str, path: Path) -> DrbenchError:
    if path.is_dir():
        return DrbenchError(f"dataset '{name}': {path} is a directory, not a data file; name the file inside it")
    return DrbenchError(f"dataset '{name}': file not found: {path}")


def _locate(name: str, root: Path) -> tuple[Path, str, dict, str]:
    """(file, reader, reader args, source label) for a dataset name; the label is never an absolute path."""
    if name.startswith(CUSTOM_PREFIXES):
        path, reader, args = _custom_source(name, root)
        if not path.is_absolute() and not path.exists() and (root / path).exists():
            path = root / path
        if not path.is_file():
            raise _not_a_file(name, path)
        return path, reader, args, _portable_path(path, root)
    entry = REGISTRY.get(name)
    if entry is None:
        raise DrbenchError(
            f"unknown dataset '{name}'; known datasets: {', '.join(dataset_names())}, "
            "or csv:<path> (interaction log) / seq:<path> (sequence file) / recbole:<path>.inter (RecBole atomic file), "
            "or a dataset card (--dataset-card FILE)"
        )
    for source in entry.sources:
        path = source.file(root)
        if path.is_file():
            return path, source.reader, source.reader_args, source.path
        if path.is_dir():
            raise _not_a_file(name, path)
    raise DrbenchError(_missing_message(entry, root))


def is_custom(name: str) -> bool:
    """True for a ``csv:``/``seq:``/``recbole:`` spec (a file named by the user, not a registered dataset)."""
    return name.startswith(CUSTOM_PREFIXES)


def default_dedup(name: str) -> str:
    """The dedup policy used when the suite sets none (protocol.dedup): a sequence file is taken as given."""
    return "keep" if name.startswith("seq:") else "first"


_LABELS: dict[str, str] = {}  # custom spec -> its label, filled whenever one is resolved


def _custom_label(name: str, path: Path, checksum: str, reader: str, args: dict) -> str:
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    stem = stem.rsplit(".", 1)[0] if "." in stem.strip(".") else stem
    stem = re.sub(r"[^A-Za-z0-9.-]+", "-", stem).strip(".-")[:40] or "data"
    identity = json.dumps({"sha256": checksum, "reader": reader, "args": args}, sort_keys=True)
    return f"{name.partition(':')[0]}-{stem}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"


def dataset_label(name: str, data_root: Path | str | None = None) -> str:
    """A safe, readable label for a dataset spec: for trial keys, file names, Ray trial names and tables.

    Registered names are their own label. A custom spec becomes
    ``<kind>-<file stem>-<hash>`` (only ``[A-Za-z0-9._-]``); the hash covers
    the file's content and the reader options, so the same file under two
    paths has one label and two files with the same name have two. Without
    ``data_root`` a spec resolved earlier in this process keeps its label.
    """
    if not is_custom(name):
        return name
    if data_root is None and name in _LABELS:
        return _LABELS[name]
    root = Path(data_root) if data_root is not None else resolve_data_root()
    path, reader, args, _ = _locate(name, root)
    _LABELS[name] = _custom_label(name, path, file_checksum(path), reader, args)
    return _LABELS[name]


OUTSIDE_DATA_ROOT = "<outside data root>"


def portable_suite_config(config: dict, data_root: Path | str | None = None) -> dict:
    """``dataclasses.asdict(suite)`` with every dataset spec (datasets, models' datasets and overrides,
    fallbacks) passed through ``portable_spec`` and ``source`` (the suite file) made relative: for suite.json."""

    def spec(name):
        return portable_spec(name, data_root) if isinstance(name, str) else name

    config = dict(config)
    config["datasets"] = [spec(name) for name in config.get("datasets", [])]
    config["fallbacks"] = {spec(k): spec(v) for k, v in (config.get("fallbacks") or {}).items()}
    config["models"] = [{**model, "datasets": [spec(name) for name in model.get("datasets", [])],
                         "overrides": {spec(k): v for k, v in (model.get("overrides") or {}).items()}}
                        for model in config.get("models", [])]
    if config.get("source"):
        config["source"] = portable_file(config["source"], data_root)
    return config


def portable_file(path: str | Path, data_root: Path | str | None = None) -> str:
    """A file's path relative to the current folder or the data root when under one, else its name only."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    for base in [Path.cwd()] + ([Path(data_root)] if data_root is not None else []):
        try:
            return Path(os.path.abspath(path)).relative_to(os.path.abspath(base)).as_posix()
        except ValueError:
            continue
    return path.name


def portable_spec(spec: str, data_root: Path | str | None = None) -> str:
    """``spec`` as the user wrote it, minus any absolute path of this machine (for suite.json and tables).

    An absolute file path becomes relative to the data root, else to the
    current folder, when it lies under one of them; otherwise its folder is
    replaced by ``<outside data root>/``. Registered names are unchanged.
    """
    if not is_custom(spec):
        return spec
    kind, _, rest = spec.partition(":")
    location, query = _split_location(rest, Path(data_root) if data_root is not None else None)
    mark = "?" if query else ""
    path = Path(location)
    if not path.is_absolute():
        return spec
    for base in ([data_root] if data_root is not None else []) + [Path.cwd()]:
        try:
            relative = Path(os.path.abspath(path)).relative_to(os.path.abspath(base))
        except ValueError:
            continue
        if relative.parts:
            return f"{kind}:{relative.as_posix()}{mark}{query}"
    return f"{kind}:{OUTSIDE_DATA_ROOT}/{path.name}{mark}{query}"


def _cache_key(checksum: str, reader: str, args: dict, config: PreprocessConfig, name: str) -> str:
    identity = {"format": CACHE_FORMAT, "source_sha256": checksum, "reader": reader, "args": args,
                "preprocess": config.as_dict(), "name": name}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def _save_cache(path: Path, data: InteractionData) -> None:
    from bench.files import atomic_write

    meta = {"name": data.name, "source": data.source, "source_sha256": data.source_sha256, "steps": list(data.steps)}
    arrays = {"offsets": data.items.offsets, "items": data.items.values, "user_ids": data.user_ids.astype(str),
              "item_ids": data.item_ids.astype(str), "meta": np.array(json.dumps(meta))}
    if data.timestamps is not None:
        arrays["timestamps"] = data.timestamps.values
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write(path, buffer.getvalue())


def _load_cache(path: Path) -> InteractionData:
    with np.load(path, allow_pickle=False) as stored:
        meta = json.loads(str(stored["meta"]))
        offsets = stored["offsets"]
        timestamps = Sequences(offsets, stored["timestamps"]) if "timestamps" in stored else None
        return InteractionData(meta["name"], Sequences(offsets, stored["items"]), timestamps,
                               stored["user_ids"], stored["item_ids"], meta["source"], meta["source_sha256"],
                               tuple(meta["steps"]))


def load_dataset(name: str, data_root: Path | str | None = None, preprocess_config: PreprocessConfig | None = None,
                 cache_dir: Path | None = None) -> InteractionData:
    """Load and preprocess a dataset; the result is cached by source checksum + config.

    A custom spec (``csv:``/``seq:``/``recbole:``) is named by its ``dataset_label``; ``dedup=None``
    in the config means the source's default (``default_dedup``). A carded dataset's data
    names its card (``card``, ``card_sha256``), which is provenance, not cached content.
    """
    config = preprocess_config or PreprocessConfig()
    if config.dedup is None:
        config = dataclasses.replace(config, dedup=default_dedup(name))
    if name == SYNTHETIC:
        from bench.data.synthetic import synthetic_dataset

        return synthetic_dataset(config=config)
    root = Path(data_root) if data_root is not None else resolve_data_root()
    path, reader, args, source = _locate(name, root)
    entry = REGISTRY.get(name)
    card = {"card": entry.card, "card_sha256": entry.card_sha256} if entry is not None else {}
    checksum = file_checksum(path)
    label = name
    if is_custom(name):
        label = _LABELS[name] = _custom_label(name, path, checksum, reader, args)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = cache_dir / f"{label[:60]}-{_cache_key(checksum, reader, args, config, label)}.npz"
    if cached.is_file():
        try:
            return dataclasses.replace(_load_cache(cached), source=source, **card)
        except (OSError, ValueError, KeyError, TypeError):
            cached.unlink(missing_ok=True)  # a damaged cache entry is rebuilt, never trusted
    log = READERS[reader](path, **args)
    data = dataclasses.replace(preprocess(log, label, config, source), source_sha256=checksum)
    try:
        _save_cache(cached, data)
    except OSError:
        pass  # a read-only cache folder only costs speed
    return dataclasses.replace(data, **card)


def dataset_available(name: str, root: Path) -> bool:
    """False only for a registered dataset none of whose files is under the data root."""
    entry = REGISTRY.get(name)
    return entry is None or any(source.file(root).is_file() for source in entry.sources)


def describe_datasets(root: Path) -> list[dict]:
    """Statistics of every registered dataset; a row with ``missing`` for absent ones."""
    rows = []
    for name in dataset_names():
        if not dataset_available(name, root):
            entry = REGISTRY[name]
            expected = entry.sources[0]
            origin = f" (official: {expected.official.url})" if expected.official else ""
            fetch = f", or run: python run_bench.py --download {name}" if any(s.official for s in entry.sources) else ""
            rows.append({"name": name, "missing": f"put {expected.file(root)}{origin}{fetch}"})
            continue
        data = load_dataset(name, root)
        rows.append({**dataset_stats(data), "steps": [dict(step) for step in data.steps]})
    return rows
