"""Explicit, verified download of a dataset's official file (``--download``).

Nothing downloads implicitly: tests and CI read files already under the data
root. A download is checked against the registry's checksum before it is
moved into place; a file without a known checksum is refused unless the user
accepts it (``--allow-unverified``), and its sha256 is printed for the record.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from bench.errors import DrbenchError
from bench.data.cards import Official
from bench.data.registry import REGISTRY, dataset_names, file_checksum


def _verify(path: Path, checksum: str | None, what: str, allow_unverified: bool, echo) -> None:
    if checksum is None:
        actual = file_checksum(path)
        if not allow_unverified:
            raise DrbenchError(
                f"no published checksum is known for {what}, so it cannot be verified; its sha256 is {actual}. "
                "Rerun with --allow-unverified to accept it."
            )
        echo(f"accepted unverified {what} (sha256 {actual})")
        return
    algorithm, _, expected = checksum.partition(":")
    actual = file_checksum(path, algorithm)
    if actual != expected:
        raise DrbenchError(f"checksum mismatch for {what}: expected {algorithm} {expected}, got {actual}; "
                           "the download is corrupt or the file changed upstream. Nothing was written.")
    echo(f"verified {what} ({algorithm} {expected[:12]}...)")


def _fetch(url: str, target: Path, echo) -> None:
    echo(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done, next_report = 0, 0.0
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                done += len(block)
                if total and done / total >= next_report:
                    echo(f"  {done / 2**20:.1f} / {total / 2**20:.1f} MiB")
                    next_report += 0.25
    except OSError as error:
        raise DrbenchError(f"could not download {url}: {error}. Check the connection, or download it by hand "
                           "and place it under the data root (see the dataset's error message for the path).") from None


def download(name: str, root: Path, allow_unverified: bool = False, echo=print) -> Path:
    entry = REGISTRY.get(name)
    if entry is None:
        raise DrbenchError(f"unknown dataset '{name}'; known datasets: {', '.join(dataset_names())}")
    source = next((s for s in entry.sources if s.official), None)
    if source is None:
        raise DrbenchError(f"dataset '{name}' has no official download")
    official: Official = source.official
    target = source.file(root)
    if target.is_file():
        echo(f"{target} already exists; nothing to download")
        return target
    if official.archive_checksum is None and official.file_checksum is None and not allow_unverified:
        raise DrbenchError(
            f"no published checksum is known for {official.url}, so the download cannot be verified. "
            "Rerun with --allow-unverified to download it anyway (its sha256 is printed for your records)."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".download-") as folder:
        fetched = Path(folder) / Path(official.url).name
        _fetch(official.url, fetched, echo)
        _verify(fetched, official.archive_checksum if official.member else official.file_checksum,
                official.url, allow_unverified, echo)
        if official.member:
            extracted = Path(folder) / "member"
            try:
                with zipfile.ZipFile(fetched) as archive, archive.open(official.member) as member, open(extracted, "wb") as out:
                    shutil.copyfileobj(member, out)
            except (zipfile.BadZipFile, KeyError) as error:
                raise DrbenchError(f"{official.url} is not the expected archive ({error})") from None
            if official.file_checksum:
                _verify(extracted, official.file_checksum, official.member, allow_unverified, echo)
            fetched = extracted
        os.replace(fetched, target)
    echo(f"saved {target}")
    return target
