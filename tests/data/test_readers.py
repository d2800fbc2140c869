"""RecBole atomic files (recbole:<path>.inter): read like the csv: log they are equivalent to, broken ones in one line."""

import numpy as np
import pytest

from bench.data import load_dataset
from bench.errors import DrbenchError
from bench.protocol.splits import make_split

HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
# u1's first two items share a timestamp (file order decides); u2's file order is not its time order
ROWS = [("u1", "a", 5, 100), ("u1", "b", 3, 100), ("u1", "c", 4, 50), ("u2", "c", 1, 300), ("u2", "a", 2, 200),
        ("u2", "d", 4, 250), ("u3", "b", 5, 10), ("u3", "d", 5, 20), ("u3", "a", 5, 30), ("u1", "a", 2, 400)]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRBENCH_CACHE", str(tmp_path / "cache"))


def write(path, header, rows, sep="\t"):
    path.write_text("\n".join([header] + [sep.join(map(str, row)) for row in rows]) + "\n")
    return path


def sequences(data):
    return {user: list(data.item_ids[data.items[row]]) for row, user in enumerate(data.user_ids)}


def test_recbole_file_with_timestamps_gives_the_sequences_of_the_equivalent_csv(tmp_path):
    inter = load_dataset(f"recbole:{write(tmp_path / 'shop.inter', HEADER, ROWS)}", tmp_path)
    csv = load_dataset(f"csv:{write(tmp_path / 'shop.csv', 'user_id,item_id,rating,timestamp', ROWS, ',')}", tmp_path)
    assert sequences(inter) == sequences(csv) == {"u1": ["c", "a", "b"], "u2": ["a", "d", "c"], "u3": ["b", "d", "a"]}
    assert inter.has_timestamps and np.array_equal(inter.timestamps.values, csv.timestamps.values)
    assert inter.steps == csv.steps and inter.steps[0]["policy"] == "first" and inter.steps[0]["dropped"] == 1
    assert inter.name.startswith("recbole-shop-") and inter.source == "shop.inter"


def test_recbole_file_without_timestamps_keeps_file_order(tmp_path):
    path = write(tmp_path / "shop.inter", "user_id:token\titem_id:token\trating:float", [row[:3] for row in ROWS])
    data = load_dataset(f"recbole:{path}", tmp_path)
    assert not data.has_timestamps
    assert sequences(data) == {"u1": ["a", "b", "c"], "u2": ["c", "a", "d"], "u3": ["b", "d", "a"]}


@pytest.mark.parametrize("protocol", ["loo", "temporal"])
def test_recbole_file_splits_exactly_like_the_equivalent_csv(tmp_path, protocol):
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{rng.integers(40)}", int(rng.integers(1, 6)), int(rng.integers(1000))) for u in range(60) for _ in range(8)]
    inter = load_dataset(f"recbole:{write(tmp_path / 'log.inter', HEADER, rows)}", tmp_path)
    csv = load_dataset(f"csv:{write(tmp_path / 'log.csv', 'user_id,item_id,rating,timestamp', rows, ',')}", tmp_path)
    assert make_split(inter, protocol).fingerprint == make_split(csv, protocol).fingerprint


def test_fields_are_renamed_like_csv_columns(tmp_path):
    path = write(tmp_path / "renamed.inter", "uid:token\tiid:token\twhen:float\tlabel:float", [("1", "x", 20, 1), ("1", "y", 10, 0)])
    data = load_dataset(f"recbole:{path}?user=uid&item=iid&time=when&rating=label", tmp_path)
    assert sequences(data) == {"1": ["y", "x"]} and list(data.timestamps[0]) == [10, 20]


def test_feature_fields_of_every_recbole_type_are_accepted_and_ignored(tmp_path):
    header = "user_id:token\titem_id:token\ttimestamp:float\treview:token_seq\temb:float_seq\tshop:token"
    path = write(tmp_path / "features.inter", header, [("1", "x", 2, "good value", "0.1 0.2", "s1"), ("1", "y", 1, "", "", "s2")])
    assert sequences(load_dataset(f"recbole:{path}", tmp_path)) == {"1": ["y", "x"]}


BROKEN = {
    "no type": ("user_id:token\titem_id\ttimestamp:float", r"bad\.inter:1: header field 'item_id' is not name:type; "
                r"a RecBole \.inter header looks like user_id:token<TAB>item_id:token"),
    "unknown type": ("user_id:token\titem_id:int\ttimestamp:float",
                     r"bad\.inter:1: field 'item_id' has type 'int'; RecBole's types are token, token_seq, float, float_seq"),
    "comma-separated": ("user_id:token,item_id:token,timestamp:float", r"bad\.inter:1: .*not tab-separated: is it a CSV\? then use csv:<path>"),
    "twice": ("user_id:token\titem_id:token\titem_id:token", r"bad\.inter:1: field 'item_id' appears twice in the header"),
    "id as float": ("user_id:token\titem_id:float\ttimestamp:float",
                    r"bad\.inter:1: field 'item_id' holds the item and must be of type token .*write item_id:token in the header"),
    "time as token": ("user_id:token\titem_id:token\ttimestamp:token", r"bad\.inter:1: field 'timestamp' holds the time and must be of type float"),
    "missing item": ("user_id:token\tproduct:token\ttimestamp:float",
                     r"bad\.inter: missing field\(s\) 'item_id'; the file's fields are 'user_id', 'product', 'timestamp'\. "
                     r"Name the right ones, e\.g\. recbole:.*bad\.inter\?user=<field>&item=<field>&time=<field>"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_bad_header_is_one_line_naming_file_line_and_fix(tmp_path, case):
    header, message = BROKEN[case]
    sep = "," if "," in header else "\t"
    path = write(tmp_path / "bad.inter", header, [("1", "x", "5")], sep)
    with pytest.raises(DrbenchError, match=message) as error:
        load_dataset(f"recbole:{path}", tmp_path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize("value, message", [
    ("yesterday", r"bad\.inter:3: timestamp must be an integer, got 'yesterday'; write whole-number times, e.g. Unix seconds"),
    ("1.5", r"bad\.inter:3: timestamp must be an integer, got '1\.5'; write whole-number times, .*scale fractional ones"),
    ("", r"bad\.inter:3: expected a 'timestamp' value"),
])
def test_a_bad_timestamp_names_its_line(tmp_path, value, message):
    path = write(tmp_path / "bad.inter", "user_id:token\titem_id:token\ttimestamp:float", [("1", "x", "5"), ("1", "y", value)])
    with pytest.raises(DrbenchError, match=message):
        load_dataset(f"recbole:{path}", tmp_path)


def test_a_required_time_field_that_is_absent_is_named(tmp_path):
    path = write(tmp_path / "bad.inter", "user_id:token\titem_id:token", [("1", "x")])
    with pytest.raises(DrbenchError, match=r"missing field\(s\) 'timestamp'"):
        load_dataset(f"recbole:{path}?time=timestamp", tmp_path)


def test_recbole_spec_must_name_an_inter_file_and_knows_its_options(tmp_path):
    path = write(tmp_path / "shop.item", "item_id:token\tgenre:token_seq", [("x", "a b")])
    with pytest.raises(DrbenchError, match=r"recbole:<path> names a RecBole interaction file, <name>\.inter"):
        load_dataset(f"recbole:{path}", tmp_path)
    with pytest.raises(DrbenchError, match=r"unknown option\(s\) seq_sep; known: user, item, time, rating, sep"):
        load_dataset(f"recbole:{tmp_path / 'shop.inter'}?seq_sep=,", tmp_path)


def test_a_field_separator_other_than_tab_is_an_option(tmp_path):
    path = write(tmp_path / "semi.inter", "user_id:token;item_id:token;timestamp:float", [("1", "x", 2), ("1", "y", 1)], ";")
    assert sequences(load_dataset(f"recbole:{path}?sep=;", tmp_path)) == {"1": ["y", "x"]}
