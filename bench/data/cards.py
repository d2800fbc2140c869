"""Dataset cards: one small YAML file per named dataset, read and checked key by key.

The built-in datasets are the cards in the repository's ``datasets/``
folder; a user adds one there or passes it with ``--dataset-card FILE``
(``registry.use_dataset_cards``). Every problem of a card is one error line
naming the card, the key and what is expected. A source path is relative to
the data root, or, when it starts with ``./`` or ``../``, to the card's own
folder (for a card kept next to its data, outside the repository); an
absolute path is refused, since a card is meant to be shared and what is
recorded of a source is its path as the card writes it.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from bench.checked import build_config, load_yaml
from bench.errors import DrbenchError
from bench.data.readers import READERS

CARD_KEYS = {"order", "name", "description", "family", "sources"}
SOURCE_KEYS = {"path", "reader", "reader_args", "official"}
OFFICIAL_KEYS = {"url", "archive_checksum", "member", "file_checksum"}
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # names are trial keys and file names as they are
FAMILY_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")
CHECKSUM_PATTERN = re.compile(r"(sha256:[0-9a-f]{64}|md5:[0-9a-f]{32})")
CARD_RELATIVE = ("./", "../")
# Set from the card's time column, as csv:...&time= does: a card that names a time column wants it used.
IMPLIED_READER_ARGS = {"require_time"}


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

    def validate(self) -> None:
        for key in ("archive_checksum", "file_checksum"):
            checksum = getattr(self, key)
            if checksum is not None and not CHECKSUM_PATTERN.fullmatch(checksum):
                raise DrbenchError(f"{key} '{checksum}' must be sha256:<64 lowercase hex digits> or md5:<32 lowercase hex digits>")


@dataclass(frozen=True)
class Source:
    path: str  # as the card writes it: relative to the data root, or (./, ../) to the card's folder
    reader: str  # key of bench.data.readers.READERS
    official: Official | None = None
    reader_args: dict = field(default_factory=dict)
    location: Path | None = None  # the file of a card-relative path, resolved when the card is read

    def file(self, root: Path | str) -> Path:
        """Where the source's file is, with this data root."""
        return self.location if self.location is not None else Path(root) / self.path


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    description: str
    sources: tuple[Source, ...]
    family: str = "other"  # "movielens", "amazon": models keep per-family default hyperparameters
    card: str = ""  # the card file, with no absolute path: datasets/<name>.yaml, or a user card's path as recorded
    card_sha256: str = ""  # of the card file's bytes, recorded with the run


def reader_options(reader: str) -> list[str]:
    """The options a card may give a reader (its keyword parameters, less those set for it)."""
    parameters = list(inspect.signature(READERS[reader]).parameters)[1:]  # the first is the file
    return [name for name in parameters if name not in IMPLIED_READER_ARGS]


def _check_keys(raw, known: set[str], required: set[str], card: str, scope: str = "") -> None:
    """``raw`` is a mapping with only ``known`` keys and every ``required`` one; ``scope`` names it in the card."""
    where = f"{card}: {scope}" if scope else card
    if not isinstance(raw, dict):
        raise DrbenchError(f"{where} must be a mapping of keys ({', '.join(sorted(known))}), got {raw!r}")
    unknown, missing = sorted(map(str, set(raw) - known)), sorted(required - set(raw))
    if unknown:
        raise DrbenchError(f"{where}: unknown key(s) {', '.join(unknown)}; keys: {', '.join(sorted(known))}")
    if missing:
        raise DrbenchError(f"{where}: missing key(s) {', '.join(missing)}; keys: {', '.join(sorted(known))}")


def _text(value, card: str, key: str, pattern: re.Pattern | None = None, form: str = "") -> str:
    if not isinstance(value, str) or not value.strip():
        raise DrbenchError(f"{card}: {key} must be a non-empty string, got {value!r}")
    if pattern is not None and not pattern.fullmatch(value):
        raise DrbenchError(f"{card}: {key} '{value}' must be {form}")
    return value


def _source(raw, path: Path, card: str, scope: str) -> Source:
    """One entry of a card's ``sources`` (``scope``: ``sources[i]``), checked key by key."""
    _check_keys(raw, SOURCE_KEYS, {"path", "reader"}, card, scope)
    file = _text(raw["path"], card, f"{scope}.path")
    if Path(file).is_absolute() or file.startswith("~"):
        raise DrbenchError(f"{card}: {scope}.path '{file}' must be relative: to the data root (folder/file.inter) or, "
                           "starting with ./ or ../, to the card's folder; an absolute path ties the card to one machine")
    reader = _text(raw["reader"], card, f"{scope}.reader")
    if reader not in READERS:
        raise DrbenchError(f"{card}: {scope}.reader must be one of {', '.join(READERS)}, got '{reader}'")
    args = {} if raw.get("reader_args") is None else raw["reader_args"]
    if not isinstance(args, dict):
        raise DrbenchError(f"{card}: {scope}.reader_args must be a mapping of {reader} options, got {args!r}")
    options = reader_options(reader)
    for key, value in args.items():
        if key not in options:
            raise DrbenchError(f"{card}: {scope}.reader_args: unknown option '{key}' of reader {reader}; "
                               f"its options: {', '.join(options) or 'none'}")
        if not isinstance(value, str) or not value:
            raise DrbenchError(f"{card}: {scope}.reader_args.{key} must be a non-empty string (a column name or separator), "
                               f"got {value!r}")
    if "time_col" in args:
        args = {**args, "require_time": True}
    official = raw.get("official")
    if official is not None:
        _check_keys(official, OFFICIAL_KEYS, {"url"}, card, f"{scope}.official")
        official = build_config(Official, official, f"{card}: {scope}.official")
    location = Path(os.path.abspath(path.parent / file)) if file.startswith(CARD_RELATIVE) else None
    return Source(file, reader, official, dict(args), location)


def load_card(path: Path, label: str) -> tuple[int, DatasetEntry]:
    """(order, entry) of one card file; ``label`` is how records name the card (never an absolute path)."""
    path = Path(path)
    card = f"dataset card {path}"
    try:
        content = path.read_bytes()
    except OSError as error:
        raise DrbenchError(f"{card}: cannot read it ({error.strerror or error}); check the path") from None
    raw = load_yaml(path, what="dataset card")
    _check_keys(raw, CARD_KEYS, {"name", "description", "sources"}, card)
    name = _text(raw["name"], card, "name", NAME_PATTERN, "letters, digits, '.', '_' and '-' (it names files and trials)")
    description = _text(raw["description"], card, "description")
    family = _text(raw["family"], card, "family", FAMILY_PATTERN, "lowercase letters, digits, '_' and '-'") if "family" in raw else "other"
    order = raw.get("order", 1000)
    if not isinstance(order, int) or isinstance(order, bool):
        raise DrbenchError(f"{card}: order must be an integer, got {order!r}")
    sources = raw["sources"]
    if not isinstance(sources, list) or not sources:
        raise DrbenchError(f"{card}: sources must be a list of one or more sources (each with path and reader), got {sources!r}")
    entry = DatasetEntry(name, description, tuple(_source(source, path, card, f"sources[{i}]") for i, source in enumerate(sources)),
                         family, label, hashlib.sha256(content).hexdigest())
    return order, entry


def load_cards(folder: Path) -> dict[str, DatasetEntry]:
    """Every card in ``folder``, in the cards' ``order``; two cards with one name are refused."""
    entries, files = [], {}
    for path in sorted(folder.glob("*.yaml")):
        order, entry = load_card(path, f"{folder.name}/{path.name}")
        if entry.name in files:
            raise DrbenchError(f"dataset cards {files[entry.name]} and {path.name} both name the dataset '{entry.name}'; "
                               "rename one")
        files[entry.name] = path.name
        entries.append((order, entry))
    return {entry.name: entry for _, entry in sorted(entries, key=lambda pair: (pair[0], pair[1].name))}
