"""Readers for the raw file formats: each returns one interaction log.

A log is a DataFrame with columns ``user``, ``item`` (strings: original ids),
``rating`` (float, NaN when the source has none) and, when the source has
them, ``timestamp`` (int64). Row order is file order, which preprocessing
uses as the chronological tie-break. Every reader turns a bad file into a
``DrbenchError`` naming the file, and the line where it can.
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import DrbenchError


GZIP_MAGIC = b"\x1f\x8b"


def unreadable_file_error(path: Path, error: OSError) -> DrbenchError:
    """One line naming a file that cannot be opened or read, and what to do about it."""
    if isinstance(error, IsADirectoryError):
        return DrbenchError(f"{path} is a directory, not a data file; name the file inside it")
    if isinstance(error, PermissionError):
        return DrbenchError(f"cannot read {path}: permission denied; make it readable (chmod +r) or copy it somewhere readable")
    if isinstance(error, FileNotFoundError):
        return DrbenchError(f"data file not found: {path}")
    return DrbenchError(f"cannot read {path}: {error.strerror or error}; check the file (or the disk it is on) and copy it again")


def _broken_file_error(path: Path, error: Exception) -> DrbenchError:
    if isinstance(error, gzip.BadGzipFile):
        return DrbenchError(f"{path} is not a gzip file although its name ends in .gz; "
                            "if it is plain text, rename it without .gz, else download or copy it again")
    if isinstance(error, EOFError):
        return DrbenchError(f"{path} is truncated (the gzip stream ends early, an interrupted download or copy?); "
                            "download or copy it again")
    if isinstance(error, zlib.error):
        return DrbenchError(f"{path} is a damaged gzip file ({error}); download or copy it again")
    if isinstance(error, UnicodeDecodeError):
        with open(path, "rb") as handle:
            compressed = handle.read(2) == GZIP_MAGIC
        if compressed and not path.name.endswith(".gz"):
            return DrbenchError(f"{path} is gzip-compressed but its name does not end in .gz; rename it to {path.name}.gz")
        return DrbenchError(f"{path} is not valid UTF-8 text ({error}); is it the right file?")
    return unreadable_file_error(path, error)


def _reports_broken_files(reader):
    """Turn a damaged, compressed-or-not, unreadable file into one ``DrbenchError`` line naming it."""

    @functools.wraps(reader)
    def read(path, *args, **kwargs):
        try:
            return reader(path, *args, **kwargs)
        except (EOFError, zlib.error, UnicodeDecodeError, OSError) as error:
            raise _broken_file_error(Path(path), error) from None

    return read


def _open_text(path: Path, encoding: str = "utf-8"):
    path = Path(path)
    if path.is_dir():
        raise DrbenchError(f"{path} is a directory, not a data file; name the file inside it")
    if not path.is_file():
        raise DrbenchError(f"data file not found: {path}")
    if path.stat().st_size == 0:
        raise DrbenchError(f"data file is empty: {path}")
    try:
        raw = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")
    except OSError as error:
        raise unreadable_file_error(path, error) from None
    return io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")


def _read_table(path: Path, what: str, **read_csv_args) -> pd.DataFrame:
    try:
        with _open_text(path, read_csv_args.pop("encoding", "utf-8")) as handle:
            frame = pd.read_csv(handle, dtype=str, keep_default_na=False, **read_csv_args)
    except pd.errors.ParserError as error:  # pandas' message names the line and may end in a newline
        raise DrbenchError(f"malformed {what} file {path}: {' '.join(str(error).split())}; "
                           "give every line the same number of fields") from None
    except pd.errors.EmptyDataError:
        raise DrbenchError(f"data file is empty: {path}") from None
    except UnicodeDecodeError as error:
        raise _broken_file_error(Path(path), error) from None
    if frame.empty:
        raise DrbenchError(f"data file has no interactions: {path}")
    return frame


def _integer_column(frame: pd.DataFrame, column: str, path: Path, first_line: int, what: str, fix: str = "") -> np.ndarray:
    """``frame[column]`` as int64; a bad value is reported with its line number and ``fix``, what to do."""
    values = pd.to_numeric(frame[column].str.strip(), errors="coerce")
    bad = values.isna() | (values != values.round())
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DrbenchError(
            f"malformed line {path}:{row + first_line}: {what} must be an integer, got '{frame[column].iloc[row]}'"
            + (f"; {fix}" if fix else "")
        )
    return values.to_numpy(dtype=np.int64)


def _float_column(frame: pd.DataFrame, column: str, path: Path, first_line: int, what: str) -> np.ndarray:
    text = frame[column].str.strip()
    values = pd.to_numeric(text, errors="coerce")
    bad = values.isna() & (text != "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DrbenchError(f"malformed line {path}:{row + first_line}: {what} must be a number, got '{text.iloc[row]}'")
    return values.to_numpy(dtype=np.float64)


def _check_complete(frame: pd.DataFrame, columns: list[str], path: Path, first_line: int, layout: str) -> None:
    missing = (frame[columns] == "").any(axis=1).to_numpy()
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        raise DrbenchError(f"malformed line {path}:{row + first_line}: expected {layout}")


def _movielens_log(frame: pd.DataFrame, path: Path, layout: str) -> pd.DataFrame:
    """The user/item/rating/timestamp columns of a header-less MovieLens file, checked line by line."""
    _check_complete(frame, ["user", "item", "rating", "timestamp"], path, 1, layout)
    return pd.DataFrame({
        "user": frame["user"].str.strip(),
        "item": frame["item"].str.strip(),
        "rating": _float_column(frame, "rating", path, 1, "rating"),
        "timestamp": _integer_column(frame, "timestamp", path, 1, "timestamp"),
    })


def read_movielens_100k(path: Path) -> pd.DataFrame:
    """``u.data``: ``user \t item \t rating \t timestamp``, no header."""
    frame = _read_table(path, "MovieLens u.data", sep="\t", header=None, names=["user", "item", "rating", "timestamp"])
    return _movielens_log(frame, path, "4 tab-separated fields: user item rating timestamp")


def read_movielens_dat(path: Path) -> pd.DataFrame:
    """``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``, no header."""
    # Splitting on ':' keeps pandas' fast C parser; '::' leaves empty fields between values.
    names = ["user", "_a", "item", "_b", "rating", "_c", "timestamp"]
    frame = _read_table(path, "MovieLens ratings.dat", sep=":", header=None, names=names)
    return _movielens_log(frame, path, "UserID::MovieID::Rating::Timestamp")


def read_interaction_csv(path: Path, user_col: str = "user_id", item_col: str = "item_id",
                         time_col: str | None = "timestamp", rating_col: str | None = "rating",
                         sep: str = ",", require_time: bool = False) -> pd.DataFrame:
    """A CSV log with a header. ``time_col``/``rating_col`` are used when present."""
    frame = _read_table(path, "interaction CSV", sep=sep)
    header = list(frame.columns)
    required = [user_col, item_col] + ([time_col] if require_time and time_col else [])
    missing = [c for c in required if c not in header]
    if missing:
        raise _missing_columns_error(path, missing, header, "column", "csv")
    return _columns_to_log(frame, path, user_col, item_col, time_col, rating_col)


def _missing_columns_error(path: Path, missing: list[str], present: list[str], what: str, scheme: str) -> DrbenchError:
    """The one line for a log without the columns (csv) or fields (recbole) it was asked to read, naming the fix."""
    return DrbenchError(f"{path}: missing {what}(s) {', '.join(repr(c) for c in missing)}; the file's {what}s are "
                        f"{', '.join(repr(c) for c in present)}. Name the right ones, e.g. "
                        f"{scheme}:{path}?user=<{what}>&item=<{what}>&time=<{what}>")


TIME_FIX = "write whole-number times, e.g. Unix seconds (scale fractional ones, e.g. to milliseconds)"


def _columns_to_log(frame: pd.DataFrame, path: Path, user_col: str, item_col: str, time_col: str | None,
                    rating_col: str | None) -> pd.DataFrame:
    """The log of a table with a header line (data from file line 2): user and item required, rating and time if present."""
    header = list(frame.columns)
    _check_complete(frame, [user_col, item_col], path, 2, f"non-empty '{user_col}' and '{item_col}'")
    log = pd.DataFrame({"user": frame[user_col].str.strip(), "item": frame[item_col].str.strip()})
    has_rating = rating_col in header and (frame[rating_col].str.strip() != "").any()
    log["rating"] = _float_column(frame, rating_col, path, 2, rating_col) if has_rating else np.nan
    if time_col in header:
        _check_complete(frame, [time_col], path, 2, f"a '{time_col}' value")
        log["timestamp"] = _integer_column(frame, time_col, path, 2, time_col, TIME_FIX)
    return log


# RecBole's atomic files (recbole.io/docs/user_guide/data/atomic_files.html): a header of
# ``name:type`` fields, separated like the rows (RecBole's field_separator, a tab by default).
RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
RECBOLE_HEADER = "user_id:token<TAB>item_id:token<TAB>rating:float<TAB>timestamp:float"


def _recbole_fields(path: Path, sep: str) -> dict[str, str]:
    """Field name -> type of a RecBole atomic file's header line, checked field by field."""
    with _open_text(path) as handle:
        header = handle.readline().rstrip("\r\n")
    entries = header.split(sep)
    fields = {}
    for entry in entries:
        name, _, kind = entry.partition(":")
        if not name or not kind or ":" in kind:
            hint = "; its fields are not tab-separated: is it a CSV? then use csv:<path>" if len(entries) == 1 and sep == "\t" else ""
            raise DrbenchError(f"malformed line {path}:1: header field '{entry}' is not name:type; a RecBole .inter "
                               f"header looks like {RECBOLE_HEADER}{hint}")
        if kind not in RECBOLE_TYPES:
            raise DrbenchError(f"malformed line {path}:1: field '{name}' has type '{kind}'; RecBole's types are "
                               f"{', '.join(RECBOLE_TYPES)}")
        if name in fields:
            raise DrbenchError(f"malformed line {path}:1: field '{name}' appears twice in the header; name each field once")
        fields[name] = kind
    return fields


def read_recbole_inter(path: Path, user_col: str = "user_id", item_col: str = "item_id",
                       time_col: str | None = "timestamp", rating_col: str | None = "rating",
                       sep: str = "\t", require_time: bool = False) -> pd.DataFrame:
    """A RecBole ``.inter`` atomic file: typed header, one interaction per line; time and rating used when present.

    The ids must be ``token`` fields and the time and rating ``float`` ones, as RecBole reads them;
    other fields (features, ``token_seq``/``float_seq``) are checked in the header and not used.
    """
    fields = _recbole_fields(path, sep)
    required = [user_col, item_col] + ([time_col] if require_time and time_col else [])
    missing = [name for name in required if name not in fields]
    if missing:
        raise _missing_columns_error(path, missing, list(fields), "field", "recbole")
    roles = [(user_col, "user", "token"), (item_col, "item", "token"), (time_col, "time", "float"), (rating_col, "rating", "float")]
    for name, role, kind in roles:
        if name in fields and fields[name] != kind:
            raise DrbenchError(f"malformed line {path}:1: field '{name}' holds the {role} and must be of type {kind} "
                               f"(as RecBole reads it), got {fields[name]}; write {name}:{kind} in the header")
    frame = _read_table(path, "RecBole .inter", sep=sep, header=0, names=list(fields))
    return _columns_to_log(frame, path, user_col, item_col, time_col, rating_col)


def read_sequence_file(path: Path) -> pd.DataFrame:
    """S3-Rec / ICLRec format: ``user item item ...`` per line, chronological, integer ids."""
    users, items = [], []
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            tokens = line.split()
            if not tokens:
                continue
            for token in tokens:
                if not token.isdigit():
                    raise DrbenchError(
                        f"malformed line {path}:{line_number}: sequence files hold integer ids "
                        f"('user item item ...'), got '{token}'"
                    )
            if len(tokens) < 2:
                raise DrbenchError(f"malformed line {path}:{line_number}: user {tokens[0]} has no items")
            users.extend([tokens[0]] * (len(tokens) - 1))
            items.extend(tokens[1:])
    if not users:
        raise DrbenchError(f"data file has no interactions: {path}")
    return pd.DataFrame({"user": users, "item": items, "rating": np.nan})


def read_amazon_reviews(path: Path) -> pd.DataFrame:
    """Official Amazon 2014 ``reviews_<Category>_5.json.gz``: one JSON review per line."""
    users, items, ratings, times = [], [], [], []
    with _open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                review = json.loads(line)
                users.append(str(review["reviewerID"]))
                items.append(str(review["asin"]))
                ratings.append(float(review.get("overall", np.nan)))
                times.append(int(review["unixReviewTime"]))
            except (ValueError, KeyError, TypeError) as error:
                raise DrbenchError(
                    f"malformed line {path}:{line_number}: expected a JSON review with reviewerID, asin and "
                    f"unixReviewTime ({type(error).__name__}: {error})"
                ) from None
    if not users:
        raise DrbenchError(f"data file has no interactions: {path}")
    return pd.DataFrame({"user": users, "item": items, "rating": ratings, "timestamp": np.asarray(times, dtype=np.int64)})


READERS = {
    name: _reports_broken_files(reader)
    for name, reader in {
        "movielens-100k": read_movielens_100k,
        "movielens-dat": read_movielens_dat,
        "interaction-csv": read_interaction_csv,
        "recbole-inter": read_recbole_inter,
        "sequences": read_sequence_file,
        "amazon-reviews": read_amazon_reviews,
    }.items()
}
