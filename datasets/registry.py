"""The named datasets, where their files live, and how they are loaded.

Each dataset lists its possible source files under the data root, best
first; the first one present is used (``InteractionData.source`` and every
result row record which). Official download locations and checksums live
here too, for ``--download``.

Data root: ``--data-root`` > ``$DRBENCH_DATA`` > ``../shared/data`` next to
the repository > ``~/.cache/drbench/data``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.errors import DrbenchError
from datasets.interactions import InteractionData, PreprocessConfig, dataset_stats, preprocess
from datasets.readers import READERS
from datasets.sequences import Sequences

REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE_FORMAT = 1  # bump when preprocessing changes what a cached file contains

AMAZON_2014 = "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles"
GROUPLENS = "https://files.grouplens.org/datasets/movielens"


@dataclass(frozen=True)
class Official:
    """Where a source file officially comes from.

    ``url`` is fetched; when it is a zip, ``member`` is extracted. A checksum
    is ``"sha256:<hex>"`` or ``"md5:<hex>"`` (GroupLens publishes md5 sums of
    its zips); None means no verified checksum is known.
    """

    url: str
    archive_checksum: str | None = None
    member: str | None = None
    file_checksum: str | None = None


@dataclass(frozen=True)
class Source:
    path: str  # relative to the data root
    reader: str  # key of datasets.readers.READERS
    official: Official | None = None
    reader_args: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    description: str
    sources: tuple[Source, ...]


def _amazon(name: str, category: str, mirror_first: tuple[Source, ...] = (), mirror_last: tuple[Source, ...] = ()) -> DatasetEntry:
    reviews = Source(
        f"amazon2014/{category}/reviews_{category}_5.json.gz", "amazon-reviews",
        Official(f"{AMAZON_2014}/reviews_{category}_5.json.gz"),
    )
    return DatasetEntry(name, f"Amazon 2014 5-core {category.replace('_', ' ')} (McAuley et al.)",
                        mirror_first + (reviews,) + mirror_last)


REGISTRY: dict[str, DatasetEntry] = {
    entry.name: entry
    for entry in (
        DatasetEntry("ml-100k", "MovieLens 100K (GroupLens)", (
            Source("ml-100k/u.data", "movielens-100k", Official(
                f"{GROUPLENS}/ml-100k.zip", "md5:0e33842e24a9c977be4e0107933c0723", "ml-100k/u.data",
                "sha256:06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490")),
        )),
        DatasetEntry("ml-1m", "MovieLens 1M (GroupLens)", (
            Source("ml-1m/ratings.dat", "movielens-dat", Official(
                f"{GROUPLENS}/ml-1m.zip", "md5:c4d9eecfca2ab87c1945afe126590906", "ml-1m/ratings.dat")),
            Source("ml-1m/sequences.txt.gz", "sequences"),
        )),
        _amazon("amazon-beauty", "Beauty", mirror_first=(
            Source("amazon2014/Beauty/interactions.csv.gz", "interaction-csv"),), mirror_last=(
            Source("amazon-beauty/sequences.txt.gz", "sequences"),)),
        _amazon("amazon-sports", "Sports_and_Outdoors", mirror_first=(
            Source("amazon2014/Sports_and_Outdoors/interactions.csv.gz", "interaction-csv"),), mirror_last=(
            Source("amazon-sports/sequences.txt.gz", "sequences"),)),
        _amazon("amazon-toys", "Toys_and_Games", mirror_last=(
            Source("amazon-toys/sequences.txt.gz", "sequences"),)),
        _amazon("amazon-cds", "CDs_and_Vinyl"),
    )
}
SYNTHETIC = "synthetic"
CUSTOM_PREFIXES = ("csv:", "seq:")


def dataset_names() -> list[str]:
    return list(REGISTRY) + [SYNTHETIC]


def dataset_family(name: str) -> str:
    """"movielens", "amazon" or "other": models keep per-family default hyperparameters."""
    if name.startswith("ml-"):
        return "movielens"
    if name.startswith("amazon-"):
        return "amazon"
    return "other"


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
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _missing_message(entry: DatasetEntry, root: Path) -> str:
    lines = [f"dataset '{entry.name}' ({entry.description}): no source file found under the data root {root}."]
    lines.append("Put one of these files there (the first present is used):")
    for source in entry.sources:
        origin = ""
        if source.official:
            origin = f"  [official: {source.official.url}" + (f", file {source.official.member} in the zip" if source.official.member else "") + "]"
        lines.append(f"  {root / source.path}{origin}")
    if any(s.official for s in entry.sources):
        lines.append(f"Fetch the official file with: python run_bench.py --download {entry.name} --data-root {root}")
    lines.append("Or point the harness at the folder that has it: --data-root DIR or DRBENCH_DATA=DIR.")
    return "\n".join(lines)


def _custom_source(name: str) -> tuple[Path, str, dict]:
    """``csv:<path>[?user=..&item=..&time=..&rating=..&sep=..]`` or ``seq:<path>``."""
    kind, _, rest = name.partition(":")
    location, _, query = rest.partition("?")
    options = dict(urllib.parse.parse_qsl(query))
    if kind == "seq":
        if options:
            raise DrbenchError(f"dataset '{name}': seq:<path> takes no options")
        return Path(location), "sequences", {}
    known = {"user": "user_col", "item": "item_col", "time": "time_col", "rating": "rating_col", "sep": "sep"}
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise DrbenchError(f"dataset '{name}': unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    args = {known[key]: value for key, value in options.items()}
    if "time" in options:
        args["require_time"] = True
    return Path(location), "interaction-csv", args


def _locate(name: str, root: Path) -> tuple[Path, str, dict, str]:
    """(file, reader, reader args, source label) for a dataset name."""
    if name.startswith(CUSTOM_PREFIXES):
        path, reader, args = _custom_source(name)
        if not path.is_absolute() and not path.exists() and (root / path).exists():
            path = root / path
        if not path.is_file():
            raise DrbenchError(f"dataset '{name}': file not found: {path}")
        return path, reader, args, str(path)
    entry = REGISTRY.get(name)
    if entry is None:
        raise DrbenchError(
            f"unknown dataset '{name}'; known datasets: {', '.join(dataset_names())}, "
            "or csv:<path> (interaction log) / seq:<path> (sequence file)"
        )
    for source in entry.sources:
        path = root / source.path
        if path.is_file():
            return path, source.reader, source.reader_args, source.path
    raise DrbenchError(_missing_message(entry, root))


def _cache_key(path: Path, reader: str, args: dict, config: PreprocessConfig, name: str) -> str:
    identity = {"format": CACHE_FORMAT, "source_sha256": file_checksum(path), "reader": reader, "args": args,
                "preprocess": config.as_dict(), "name": name}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]


def _save_cache(path: Path, data: InteractionData) -> None:
    from bench.results import atomic_write

    arrays = {"offsets": data.items.offsets, "items": data.items.values, "user_ids": data.user_ids.astype(str),
              "item_ids": data.item_ids.astype(str), "meta": np.array(json.dumps({"name": data.name, "source": data.source}))}
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
                               stored["user_ids"], stored["item_ids"], meta["source"])


def load_dataset(name: str, data_root: Path | str | None = None, preprocess_config: PreprocessConfig | None = None,
                 cache_dir: Path | None = None) -> InteractionData:
    """Load and preprocess a dataset; the result is cached by source checksum + config."""
    config = preprocess_config or PreprocessConfig()
    if name == SYNTHETIC:
        from datasets.synthetic import synthetic_dataset

        return synthetic_dataset(config=config)
    root = Path(data_root) if data_root is not None else resolve_data_root()
    path, reader, args, label = _locate(name, root)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cached = cache_dir / f"{name.replace(':', '_').replace('/', '_')[:60]}-{_cache_key(path, reader, args, config, name)}.npz"
    if cached.is_file():
        try:
            return _load_cache(cached)
        except (OSError, ValueError, KeyError):
            cached.unlink(missing_ok=True)  # a damaged cache entry is rebuilt, never trusted
    log = READERS[reader](path, **args)
    data = preprocess(log, name, config, label)
    try:
        _save_cache(cached, data)
    except OSError:
        pass  # a read-only cache folder only costs speed
    return data


def dataset_available(name: str, root: Path) -> bool:
    """False only for a registered dataset none of whose files is under the data root."""
    entry = REGISTRY.get(name)
    return entry is None or any((Path(root) / source.path).is_file() for source in entry.sources)


def describe_datasets(root: Path) -> list[dict]:
    """Statistics of every registered dataset; a row with ``missing`` for absent ones."""
    rows = []
    for name in dataset_names():
        if not dataset_available(name, root):
            expected = REGISTRY[name].sources[0]
            origin = f" (official: {expected.official.url})" if expected.official else ""
            rows.append({"name": name, "missing": f"put {root / expected.path}{origin}, "
                                                  f"or run: python run_bench.py --download {name}"})
            continue
        rows.append(dataset_stats(load_dataset(name, root)))
    return rows
