import gzip
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bench.data.registry as registry
from bench.errors import DrbenchError
from bench.data import PreprocessConfig, dataset_stats, download, load_dataset, preprocess, resolve_data_root, synthetic_dataset
from bench.data.cards import DatasetEntry, Official, Source
from tests.conftest import FIXTURES, MIRROR

needs_mirror = pytest.mark.skipif(not MIRROR.is_dir(), reason="dataset mirror ../shared/data not present")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRBENCH_CACHE", str(tmp_path / "cache"))


def log(rows, timestamps=True):
    frame = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"][: 4 if timestamps else 3])
    return frame.astype({"user": str, "item": str, "rating": float})


@needs_mirror
@pytest.mark.parametrize("name, users, items, interactions, has_timestamps", [
    ("ml-100k", 943, 1682, 100_000, True),
    ("ml-1m", 6040, 3706, 1_000_209, False),
    ("amazon-beauty", 22_363, 12_101, 198_502, True),
    ("amazon-sports", 35_598, 18_357, 296_337, True),
    ("amazon-toys", 19_412, 11_924, 167_597, False),
])
def test_mirror_counts_match_published_statistics(name, users, items, interactions, has_timestamps):
    stats = dataset_stats(load_dataset(name, MIRROR))
    assert (stats["users"], stats["items"], stats["interactions"]) == (users, items, interactions)
    assert stats["has_timestamps"] is has_timestamps


@needs_mirror
def test_beauty_timestamp_ties_keep_the_s3rec_order():
    timed = load_dataset("amazon-beauty", MIRROR)
    ordered = load_dataset(f"seq:{MIRROR / 'amazon-beauty' / 'sequences.txt.gz'}")
    items = pd.read_csv(MIRROR / "amazon2014" / "Beauty" / "items.csv.gz", dtype=str)
    users = pd.read_csv(MIRROR / "amazon2014" / "Beauty" / "users.csv.gz", dtype=str)
    to_int_item = dict(zip(items.item_id, items.iclrec_item_id))
    row_of_user = {user: row for row, user in enumerate(ordered.user_ids)}
    to_int_user = dict(zip(users.user_id, users.iclrec_user_id))
    for row in range(0, timed.n_users, 97):
        mine = [to_int_item[timed.item_ids[i]] for i in timed.items[row]]
        reference = ordered.item_ids[ordered.items[row_of_user[to_int_user[timed.user_ids[row]]]]]
        assert mine == list(reference)
        assert np.all(np.diff(timed.timestamps[row]) >= 0)


def test_chronological_order_with_file_order_tie_break():
    data = preprocess(log([("u", "b", 5, 20), ("u", "a", 5, 10), ("u", "c", 5, 20), ("u", "d", 5, 15)]),
                      "t", PreprocessConfig())
    assert list(data.item_ids[data.items[0]]) == ["a", "d", "b", "c"]
    assert list(data.timestamps[0]) == [10, 15, 20, 20]


def test_ids_are_remapped_to_one_based_sorted_ids_with_padding_at_zero():
    data = preprocess(log([("2", "10", 1, 1), ("2", "9", 1, 2), ("1", "100", 1, 3)]), "t", PreprocessConfig())
    assert list(data.item_ids) == ["[PAD]", "9", "10", "100"]  # numeric ids sort numerically
    assert list(data.user_ids) == ["1", "2"]
    assert data.items[0].tolist() == [3] and data.items[1].tolist() == [2, 1]
    assert data.items.values.min() == 1


@pytest.mark.parametrize("policy, expected", [("first", ["a", "b"]), ("last", ["b", "a"]), ("keep", ["a", "b", "a"])])
def test_duplicate_policies(policy, expected):
    data = preprocess(log([("u", "a", 5, 1), ("u", "b", 5, 2), ("u", "a", 5, 3)]), "t", PreprocessConfig(dedup=policy))
    assert list(data.item_ids[data.items[0]]) == expected


def test_min_rating_keeps_ratings_at_or_above_the_threshold():
    data = preprocess(log([("u", "a", 3, 1), ("u", "b", 4, 2), ("u", "c", 5, 3)]), "t", PreprocessConfig(min_rating=4))
    assert list(data.item_ids[data.items[0]]) == ["b", "c"]


def test_min_rating_on_data_without_ratings_is_refused():
    with pytest.raises(DrbenchError, match="has no ratings"):
        preprocess(log([("u", "a", np.nan, 1)]), "t", PreprocessConfig(min_rating=4))


def test_k_core_is_iterative():
    # Dropping item z (1 user) leaves user v with 1 item, which must then go too.
    rows = [("u", "x", 1, 1), ("u", "y", 1, 2), ("w", "x", 1, 1), ("w", "y", 1, 2), ("v", "x", 1, 1), ("v", "z", 1, 2)]
    data = preprocess(log(rows), "t", PreprocessConfig(core=2))
    assert list(data.user_ids) == ["u", "w"]
    assert list(data.item_ids) == ["[PAD]", "x", "y"]


def test_bad_preprocess_values_are_rejected():
    with pytest.raises(DrbenchError, match="dedup"):
        PreprocessConfig(dedup="sometimes")
    with pytest.raises(DrbenchError, match="core"):
        PreprocessConfig(core=-1)


def test_unknown_dataset_lists_the_valid_names(tmp_path):
    with pytest.raises(DrbenchError, match="unknown dataset 'ml-2m'.*ml-100k.*amazon-cds.*csv:<path>"):
        load_dataset("ml-2m", tmp_path)


def test_missing_dataset_names_the_expected_file_and_official_source(tmp_path):
    with pytest.raises(DrbenchError) as error:
        load_dataset("amazon-cds", tmp_path)
    message = str(error.value)
    assert str(tmp_path / "amazon2014" / "CDs_and_Vinyl" / "reviews_CDs_and_Vinyl_5.json.gz") in message
    assert "snap.stanford.edu/data/amazon/productGraph/categoryFiles/reviews_CDs_and_Vinyl_5.json.gz" in message
    assert "--download amazon-cds" in message and "DRBENCH_DATA" in message


def test_movielens_file_with_a_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "ml-100k" / "u.data"
    path.parent.mkdir()
    path.write_text("1\t2\t5\t100\n1\t3\t4\tyesterday\n")
    with pytest.raises(DrbenchError, match=r"u\.data:2: timestamp must be an integer, got 'yesterday'"):
        load_dataset("ml-100k", tmp_path)
    path.write_text("1\t2\t5\t100\n1\t3\n")
    with pytest.raises(DrbenchError, match=r"u\.data:2: expected 4 tab-separated fields"):
        load_dataset("ml-100k", tmp_path)


def test_empty_file_is_reported(tmp_path):
    (tmp_path / "ml-100k").mkdir()
    (tmp_path / "ml-100k" / "u.data").write_text("")
    with pytest.raises(DrbenchError, match="data file is empty"):
        load_dataset("ml-100k", tmp_path)


def test_sequence_file_with_non_integer_id_names_file_and_line(tmp_path):
    path = tmp_path / "seqs.txt.gz"
    with gzip.open(path, "wt") as out:
        out.write("1 5 6 7\n2 5 B00X 7\n")
    with pytest.raises(DrbenchError, match=r"seqs\.txt\.gz:2: .*integer ids.*'B00X'"):
        load_dataset(f"seq:{path}")


def test_sequence_file_keeps_line_order():
    data = load_dataset(f"seq:{FIXTURES / 'tiny_sequences.txt'}")
    assert data.n_users == 3 and not data.has_timestamps
    assert list(data.item_ids[data.items[0]]) == ["3", "1", "2"]


def test_csv_with_configurable_columns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("userId,movieId,when\nu1,m2,5\nu1,m1,3\nu2,m1,1\n")
    data = load_dataset(f"csv:{path}?user=userId&item=movieId&time=when")
    assert data.has_timestamps
    assert list(data.item_ids[data.items[0]]) == ["m1", "m2"]


def test_csv_missing_columns_lists_the_file_columns(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("userId,movieId\nu1,m2\n")
    with pytest.raises(DrbenchError, match=r"missing column\(s\) 'user_id', 'item_id'; the file's columns are 'userId', 'movieId'"):
        load_dataset(f"csv:{path}")
    with pytest.raises(DrbenchError, match=r"missing column\(s\) 'ts'"):
        load_dataset(f"csv:{path}?user=userId&item=movieId&time=ts")


def test_second_load_comes_from_the_cache_and_the_key_follows_content_and_config(tmp_path, monkeypatch):
    path = tmp_path / "seqs.txt"
    path.write_text("1 1 2 3\n2 2 3 1\n")
    first = load_dataset(f"seq:{path}")

    def no_reading(*args, **kwargs):
        raise AssertionError("the source was read again")

    monkeypatch.setitem(registry.READERS, "sequences", no_reading)
    again = load_dataset(f"seq:{path}")
    assert np.array_equal(first.items.values, again.items.values) and list(again.item_ids) == list(first.item_ids)
    with pytest.raises(AssertionError, match="read again"):
        load_dataset(f"seq:{path}", preprocess_config=PreprocessConfig(core=2))
    path.write_text("1 1 2 3\n2 2 3 3\n")
    with pytest.raises(AssertionError, match="read again"):
        load_dataset(f"seq:{path}")


def test_data_root_precedence(tmp_path, monkeypatch):
    flag, env = tmp_path / "flag", tmp_path / "env"
    flag.mkdir(), env.mkdir()
    monkeypatch.setenv("DRBENCH_DATA", str(env))
    assert resolve_data_root(str(flag)) == flag
    assert resolve_data_root() == env
    with pytest.raises(DrbenchError, match="no such folder"):
        resolve_data_root(str(tmp_path / "absent"))


def _zip_with_member(tmp_path, content: bytes) -> Path:
    archive = tmp_path / "served" / "toy.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("toy/u.data", content)
    return archive


def test_download_verifies_checksums_before_writing(tmp_path, monkeypatch):
    content = b"1\t2\t5\t100\n1\t3\t4\t200\n"
    archive = _zip_with_member(tmp_path, content)
    good = registry.file_checksum(archive, "md5")
    root = tmp_path / "root"
    root.mkdir()

    def register(checksum):
        official = Official(archive.as_uri(), checksum, "toy/u.data")
        monkeypatch.setitem(registry.REGISTRY, "toy", DatasetEntry("toy", "toy", (Source("toy/u.data", "movielens-100k", official),)))

    register("md5:" + "0" * 32)
    with pytest.raises(DrbenchError, match="checksum mismatch"):
        download("toy", root, echo=lambda *_: None)
    assert not (root / "toy" / "u.data").exists()
    register(f"md5:{good}")
    target = download("toy", root, echo=lambda *_: None)
    assert target.read_bytes() == content
    assert load_dataset("toy", root).n_interactions == 2


def test_download_without_a_known_checksum_needs_consent(tmp_path, monkeypatch):
    served = tmp_path / "reviews.json.gz"
    with gzip.open(served, "wt") as out:
        out.write('{"reviewerID": "A", "asin": "X", "overall": 5.0, "unixReviewTime": 10}\n')
    monkeypatch.setitem(registry.REGISTRY, "toy", DatasetEntry("toy", "toy", (
        Source("toy/reviews.json.gz", "amazon-reviews", Official(served.as_uri())),)))
    with pytest.raises(DrbenchError, match="--allow-unverified"):
        download("toy", tmp_path / "root", echo=lambda *_: None)
    download("toy", tmp_path / "root", allow_unverified=True, echo=lambda *_: None)
    data = load_dataset("toy", tmp_path / "root")
    assert data.has_timestamps and list(data.item_ids) == ["[PAD]", "X"]


def test_synthetic_dataset_is_deterministic_and_timestamped():
    first, second = synthetic_dataset(), synthetic_dataset()
    assert np.array_equal(first.items.values, second.items.values)
    assert first.has_timestamps and first.items.values.min() >= 1 and first.items.values.max() <= first.n_items
    assert all(np.all(np.diff(first.timestamps[u]) > 0) for u in range(first.n_users))


# --- custom files: safe labels, portable paths, dedup defaults, broken files -------------------------------------------

WEIRD_DIR = "my data=1&x?y:z"


def _seq_file(folder, text="1 5 6 5 7\n2 5 6 7\n3 6 7 8 6\n", name="items.txt"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def test_dataset_label_is_safe_and_follows_content_not_path(tmp_path):
    first = _seq_file(tmp_path / WEIRD_DIR)
    same = _seq_file(tmp_path / "elsewhere")
    other = _seq_file(tmp_path / "third", text="1 2 3 4\n")
    label = registry.dataset_label(f"seq:{first}", tmp_path)
    assert label.startswith("seq-items-") and len(label) == len("seq-items-") + 8
    assert set(label) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert registry.dataset_label(f"seq:{same}", tmp_path) == label
    assert registry.dataset_label(f"seq:{other}", tmp_path) != label
    assert registry.dataset_label("ml-1m") == "ml-1m" and registry.dataset_label("synthetic") == "synthetic"
    csv = tmp_path / "log.csv"
    csv.write_text("u,i\n1,2\n")
    assert registry.dataset_label(f"csv:{csv}?user=u&item=i", tmp_path).startswith("csv-log-")
    assert registry.dataset_family(f"seq:{first}") == "other"


def test_seq_path_with_question_mark_spaces_and_colon_loads_and_is_named_by_its_label(tmp_path):
    path = _seq_file(tmp_path / WEIRD_DIR)
    data = load_dataset(f"seq:{path}", tmp_path / "root-elsewhere")
    assert data.n_users == 3 and data.name == registry.dataset_label(f"seq:{path}")
    stats = dataset_stats(data)
    assert stats["source"] == "items.txt" and str(tmp_path) not in json_text(stats)
    assert stats["sha256"] == registry.file_checksum(path)
    assert dataset_stats(load_dataset(f"seq:{path}", tmp_path))["source"] == f"{WEIRD_DIR}/items.txt"  # under the data root


def json_text(value) -> str:
    import json

    return json.dumps(value)


def test_portable_spec_never_keeps_an_absolute_path(tmp_path, monkeypatch):
    root = tmp_path / "root"
    inside = _seq_file(root / "sub dir")
    outside = _seq_file(tmp_path / WEIRD_DIR)
    monkeypatch.chdir(tmp_path / WEIRD_DIR)
    assert registry.portable_spec(f"seq:{inside}", root) == "seq:sub dir/items.txt"
    assert registry.portable_spec(f"seq:{outside}", root) == "seq:items.txt"  # relative to the current folder
    monkeypatch.chdir(root)
    assert registry.portable_spec(f"seq:{outside}", root / "sub dir") == "seq:<outside data root>/items.txt"
    csv = tmp_path / WEIRD_DIR / "log.csv"
    csv.write_text("u,i\n1,2\n")
    assert registry.portable_spec(f"csv:{csv}?user=u&item=i", root) == "csv:<outside data root>/log.csv?user=u&item=i"
    assert registry.portable_spec("ml-1m", root) == "ml-1m" and registry.portable_spec("seq:rel/x.txt", root) == "seq:rel/x.txt"
    config = registry.portable_suite_config({"datasets": [f"seq:{outside}"], "fallbacks": {},
                                            "models": [{"datasets": [f"seq:{outside}"], "overrides": {f"seq:{outside}": {}}}],
                                            "source": str(tmp_path / "suite.yaml")}, root)
    assert str(tmp_path) not in json_text(config)


def test_sequence_files_keep_repeats_by_default_and_every_step_is_counted(tmp_path):
    path = _seq_file(tmp_path)  # user 1 repeats item 5, user 3 repeats item 6
    kept = load_dataset(f"seq:{path}", tmp_path)
    assert kept.n_interactions == 11
    assert [dict(s) for s in kept.steps] == [{"step": "dedup", "policy": "keep", "repeats": 2, "dropped": 0, "kept": 11}]
    first = load_dataset(f"seq:{path}", tmp_path, PreprocessConfig(dedup="first", core=2))
    assert first.steps[0] == {"step": "dedup", "policy": "first", "repeats": 2, "dropped": 2, "kept": 9}
    assert first.steps[1] == {"step": "k-core", "k": 2, "users_dropped": 0, "items_dropped": 1, "dropped": 1, "kept": 8}
    again = load_dataset(f"seq:{path}", tmp_path, PreprocessConfig(dedup="first", core=2))  # from the cache
    assert again.steps == first.steps
    csv = tmp_path / "log.csv"
    csv.write_text("user_id,item_id,rating\n1,a,5\n1,a,4\n1,b,2\n")
    data = load_dataset(f"csv:{csv}", tmp_path, PreprocessConfig(min_rating=3))
    assert [(s["step"], s["dropped"], s["kept"]) for s in data.steps] == [("min_rating", 1, 2), ("dedup", 1, 1)]


def _truncated_gzip(path):
    text = "".join(f"{u} {u % 97 + 1} {u % 89 + 2} {u % 83 + 3}\n" for u in range(1, 20000)).encode()
    packed = gzip.compress(text)
    path.write_bytes(packed[: len(packed) // 2])


BROKEN = {
    "truncated gzip": ("seqs.txt.gz", _truncated_gzip, r"seqs\.txt\.gz is truncated.*download or copy it again"),
    "not gzip": ("seqs.txt.gz", lambda p: p.write_text("1 2 3\n"), r"seqs\.txt\.gz is not a gzip file.*rename it without \.gz"),
    "damaged gzip": ("seqs.txt.gz", lambda p: p.write_bytes(gzip.compress(b"1 2 3\n" * 5000)[:10] + b"\x00garbage" * 50),
                     r"seqs\.txt\.gz is a damaged gzip file.*download or copy it again"),
    "directory": ("seqs.txt", lambda p: p.mkdir(), r"seqs\.txt is a directory, not a data file; name the file inside it"),
    "gzip without .gz": ("seqs.txt", lambda p: p.write_bytes(gzip.compress(b"1 2 3\n")), r"seqs\.txt is gzip-compressed.*rename it to seqs\.txt\.gz"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_file_is_one_line_naming_it_and_the_fix(tmp_path, case):
    name, make, message = BROKEN[case]
    make(tmp_path / name)
    with pytest.raises(DrbenchError, match=message) as error:
        load_dataset(f"seq:{tmp_path / name}", tmp_path)
    assert "\n" not in str(error.value) and str(tmp_path / name) in str(error.value)


def test_a_broken_registered_file_is_one_line_too(tmp_path):
    path = tmp_path / "amazon2014" / "Toys_and_Games" / "reviews_Toys_and_Games_5.json.gz"
    path.parent.mkdir(parents=True)
    reviews = "".join(f'{{"reviewerID": "U{u}", "asin": "A{u * 7919 % 10007}", "unixReviewTime": {u}}}\n' for u in range(20000))
    packed = gzip.compress(reviews.encode())
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DrbenchError, match=r"reviews_Toys_and_Games_5\.json\.gz is truncated"):
        load_dataset("amazon-toys", tmp_path)


@pytest.mark.parametrize("where", ["checksum", "reader"])
def test_an_unreadable_file_is_one_line_naming_it(tmp_path, monkeypatch, where):
    import builtins

    path = _seq_file(tmp_path)
    real_open = builtins.open
    calls = []

    def denying_open(file, *args, **kwargs):  # tests run as root, where chmod 000 still reads
        if str(file) == str(path):
            calls.append(file)
            if where == "checksum" or len(calls) > 1:
                raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", denying_open)
    with pytest.raises(DrbenchError, match=rf"cannot read {path}: permission denied; make it readable") as error:
        load_dataset(f"seq:{path}", tmp_path)
    assert "\n" not in str(error.value)
