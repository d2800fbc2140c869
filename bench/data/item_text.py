"""Item texts (title and genres) of the datasets that ship them, aligned with internal item ids.

Text-based semantic IDs embed these strings. MovieLens ships titles and
genres; the Amazon mirrors here carry no item metadata (see the data
mirror's README), so they have no texts.

- ``ml-100k``: ``ml-100k/u.item`` (latin-1, ``|``-separated: id, title,
  release dates, IMDb URL, 19 genre flags) with genre names from
  ``ml-100k/u.genre`` (``name|index``).
- ``ml-1m``: ``ml-1m/movies.dat`` (latin-1, ``MovieID::Title::Genres`` with
  genres joined by ``|``).

Each text reads ``"<title>. Genres: <genre>, <genre>"``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.errors import DrbenchError

TEXT_FILES = {"ml-100k": ("ml-100k/u.item", "ml-100k/u.genre"), "ml-1m": ("ml-1m/movies.dat",)}
NO_TEXT_FIX = ("item texts exist only for " + ", ".join(TEXT_FILES) +
               " (their title/genre files in the data root); for other datasets use sid_source: collaborative")


def has_item_text(dataset: str, data_root: Path | str) -> bool:
    """True when the dataset has item texts and their files are under the data root."""
    files = TEXT_FILES.get(dataset)
    return files is not None and all((Path(data_root) / name).is_file() for name in files)


def _describe(title: str, genres: list[str]) -> str:
    return f"{title}. Genres: {', '.join(genres)}" if genres else title


def _movielens_100k(root: Path) -> dict[str, str]:
    genre_names = {}
    for line in (root / "ml-100k/u.genre").read_text(encoding="latin-1").splitlines():
        if line.strip():
            name, _, index = line.rpartition("|")
            genre_names[int(index)] = name
    texts = {}
    for line in (root / "ml-100k/u.item").read_text(encoding="latin-1").splitlines():
        if not line.strip():
            continue
        fields = line.split("|")
        flags = fields[5:]
        texts[fields[0]] = _describe(fields[1], [genre_names[i] for i, flag in enumerate(flags) if flag == "1"])
    return texts


def _movielens_1m(root: Path) -> dict[str, str]:
    texts = {}
    for line in (root / "ml-1m/movies.dat").read_text(encoding="latin-1").splitlines():
        if line.strip():
            movie_id, title, genres = line.split("::")
            texts[movie_id] = _describe(title, genres.split("|"))
    return texts


READERS = {"ml-100k": _movielens_100k, "ml-1m": _movielens_1m}


def item_texts(dataset: str, data_root: Path | str, item_ids: np.ndarray) -> list[str]:
    """Texts indexed by internal item id (``item_ids`` = ``InteractionData.item_ids``; entry 0, padding, is "")."""
    if dataset not in READERS:
        raise DrbenchError(f"dataset '{dataset}' has no item texts: {NO_TEXT_FIX}")
    root = Path(data_root)
    missing = [str(root / name) for name in TEXT_FILES[dataset] if not (root / name).is_file()]
    if missing:
        raise DrbenchError(f"item texts of '{dataset}' need {', '.join(missing)}; put the GroupLens file(s) there, "
                           "or use sid_source: collaborative")
    by_id = READERS[dataset](root)
    unknown = [str(i) for i in item_ids[1:] if str(i) not in by_id]
    if unknown:
        raise DrbenchError(f"item texts of '{dataset}': {len(unknown)} item(s) have no entry in the title file "
                           f"(first: {unknown[0]}); is the title file from the same release as the interactions?")
    return [""] + [by_id[str(i)] for i in item_ids[1:]]
