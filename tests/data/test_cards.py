"""Dataset cards: the built-in ones and a user's (--dataset-card), checked key by key, one error line per problem."""

import json
import shutil
from pathlib import Path

import pytest

import bench.data.registry as registry
from bench.data import dataset_stats, describe_datasets, load_dataset
from bench.data.cards import load_cards
from bench.errors import DrbenchError
from tests.conftest import FIXTURES

SHOP = FIXTURES / "own-data"
CARD = """name: my-shop
description: my shop's log
family: other
sources:
- path: ./shop.inter
  reader: recbole-inter
"""


@pytest.fixture(autouse=True)
def private_cache_and_cards(tmp_path, monkeypatch):
    monkeypatch.setenv("DRBENCH_CACHE", str(tmp_path / "cache"))
    yield
    registry.use_dataset_cards([])  # no test leaves its cards registered


def card_folder(tmp_path, text=CARD, name="card.yaml"):
    """A card next to a copy of the shop log, in a folder of its own."""
    folder = tmp_path / "cards"
    folder.mkdir(exist_ok=True)
    shutil.copy(SHOP / "shop.inter", folder / "shop.inter")
    (folder / name).write_text(text)
    return folder / name


def test_the_built_in_cards_name_their_files():
    assert list(registry.BUILT_IN)[:2] == ["ml-100k", "ml-1m"]
    for name, entry in registry.BUILT_IN.items():
        assert entry.card == f"datasets/{name}.yaml" and len(entry.card_sha256) == 64


def test_a_card_next_to_its_data_loads_from_any_data_root_and_records_no_absolute_path(tmp_path, monkeypatch):
    card = card_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    [entry] = registry.use_dataset_cards([card])
    assert entry.card == "cards/card.yaml"  # relative to the current folder
    assert "my-shop" in registry.dataset_names() and registry.dataset_label("my-shop") == "my-shop"
    data = load_dataset("my-shop", tmp_path / "elsewhere")
    assert (data.name, data.n_users, data.n_items, data.source) == ("my-shop", 48, 30, "./shop.inter")
    stats = dataset_stats(data)
    assert stats["card"] == "cards/card.yaml" and stats["card_sha256"] == registry.file_checksum(card)
    assert str(tmp_path) not in json.dumps(stats)


def test_a_card_path_without_dot_slash_is_under_the_data_root(tmp_path):
    root = tmp_path / "root"
    (root / "shops").mkdir(parents=True)
    shutil.copy(SHOP / "shop.inter", root / "shops" / "shop.inter")
    registry.use_dataset_cards([card_folder(tmp_path, CARD.replace("./shop.inter", "shops/shop.inter"))])
    assert load_dataset("my-shop", root).source == "shops/shop.inter"
    with pytest.raises(DrbenchError, match=rf"dataset 'my-shop' \(my shop's log\): no source file found under the data root {tmp_path}"):
        load_dataset("my-shop", tmp_path)


def test_reader_options_of_a_card_reach_the_reader(tmp_path):
    text = CARD.replace("reader: recbole-inter", "reader: recbole-inter\n  reader_args: {item_col: user_id, user_col: item_id}")
    registry.use_dataset_cards([card_folder(tmp_path, text)])
    swapped = load_dataset("my-shop", tmp_path)
    assert (swapped.n_users, swapped.n_items) == (30, 48)  # items as users: the options were used


def test_each_command_sees_only_its_own_cards(tmp_path):
    registry.use_dataset_cards([card_folder(tmp_path)])
    assert "my-shop" in registry.REGISTRY
    registry.use_dataset_cards([])
    assert "my-shop" not in registry.REGISTRY and list(registry.REGISTRY) == list(registry.BUILT_IN)


def test_list_datasets_shows_a_card_dataset_and_where_its_missing_file_goes(tmp_path):
    card = card_folder(tmp_path)
    registry.use_dataset_cards([card])
    rows = {row["name"]: row for row in describe_datasets(tmp_path)}
    assert rows["my-shop"]["users"] == 48
    (card.parent / "shop.inter").unlink()
    missing = {row["name"]: row for row in describe_datasets(tmp_path)}["my-shop"]["missing"]
    assert missing == f"put {card.parent / 'shop.inter'}"  # no official source: no --download hint


SOURCE = "sources:\n- path: ./shop.inter\n  reader: recbole-inter\n"
HEAD = "name: my-shop\ndescription: d\n"
BAD_CARDS = {
    "unknown key": (HEAD + "colour: red\n" + SOURCE, r"unknown key\(s\) colour; keys: description, family, name, order, sources"),
    "missing key": ("name: my-shop\n" + SOURCE, r"missing key\(s\) description"),
    "unknown reader": (HEAD + SOURCE.replace("recbole-inter", "parquet"),
                       r"sources\[0\]\.reader must be one of movielens-100k, .*recbole-inter.*, got 'parquet'"),
    "missing path": (HEAD + "sources:\n- reader: recbole-inter\n", r"sources\[0\]: missing key\(s\) path"),
    "empty path": (HEAD + SOURCE.replace("./shop.inter", "''"), r"sources\[0\]\.path must be a non-empty string"),
    "absolute path": (HEAD + SOURCE.replace("./shop.inter", "/data/shop.inter"),
                      r"sources\[0\]\.path '/data/shop\.inter' must be relative: to the data root .* or, starting with \./ or \.\./, to the card's folder"),
    "built-in name": (HEAD.replace("my-shop", "ml-1m") + SOURCE, r"the name 'ml-1m' is a built-in dataset's; give the card another name"),
    "synthetic name": (HEAD.replace("my-shop", "synthetic") + SOURCE, r"the name 'synthetic' is a built-in dataset's"),
    "unsafe name": (HEAD.replace("my-shop", "'my shop'") + SOURCE, r": name 'my shop' must be letters, digits, '\.', '_' and '-'"),
    "bad checksum": (HEAD + SOURCE + "  official: {url: 'https://example.org/shop.inter', file_checksum: 'sha256:abc'}\n",
                     r"sources\[0\]\.official: file_checksum 'sha256:abc' must be sha256:<64 lowercase hex digits> or md5:<32"),
    "unknown checksum kind": (HEAD + SOURCE + f"  official: {{url: u, archive_checksum: 'crc32:{'0' * 8}'}}\n",
                              r"archive_checksum 'crc32:00000000' must be sha256:"),
    "official without url": (HEAD + SOURCE + "  official: {member: x}\n", r"sources\[0\]\.official: missing key\(s\) url"),
    "unknown reader option": (HEAD + SOURCE + "  reader_args: {columns: a}\n",
                              r"reader_args: unknown option 'columns' of reader recbole-inter; its options: user_col, item_col, time_col, rating_col, sep"),
    "option not a string": (HEAD + SOURCE + "  reader_args: {user_col: 3}\n", r"reader_args\.user_col must be a non-empty string"),
    "no sources": (HEAD + "sources: []\n", r": sources must be a list of one or more sources"),
    "source not a mapping": (HEAD + "sources: [./shop.inter]\n", r"sources\[0\] must be a mapping of keys"),
    "order not an integer": (HEAD + "order: first\n" + SOURCE, r": order must be an integer, got 'first'"),
    "bad family": (HEAD + "family: MovieLens\n" + SOURCE, r": family 'MovieLens' must be lowercase letters"),
    "not a mapping": ("- name: my-shop\n", r"dataset card .*card\.yaml must contain a mapping at the top level"),
    "not YAML": (HEAD + "sources: [\n", r"dataset card .*card\.yaml is not valid YAML: line \d+, column \d+"),
    "duplicate key": (HEAD + "name: again\n" + SOURCE, r"duplicate key 'name'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CARDS))
def test_a_bad_card_is_one_line_naming_the_card_and_the_key(tmp_path, case):
    text, message = BAD_CARDS[case]
    card = card_folder(tmp_path, text)
    with pytest.raises(DrbenchError, match=message) as error:
        registry.use_dataset_cards([card])
    assert "\n" not in str(error.value) and "card.yaml" in str(error.value)
    assert "my-shop" not in registry.REGISTRY


def test_a_missing_card_file_and_two_cards_with_one_name_are_refused(tmp_path):
    with pytest.raises(DrbenchError, match=r"dataset card .*absent\.yaml: cannot read it \(No such file or directory\)"):
        registry.use_dataset_cards([tmp_path / "absent.yaml"])
    first = card_folder(tmp_path)
    second = card_folder(tmp_path, name="copy.yaml")
    with pytest.raises(DrbenchError, match=r"dataset cards .*card\.yaml and .*copy\.yaml both name the dataset 'my-shop'; rename one"):
        registry.use_dataset_cards([first, second])
    assert "my-shop" not in registry.REGISTRY  # none of a refused command's cards is registered


def test_two_cards_of_one_folder_with_one_name_are_refused(tmp_path):
    card_folder(tmp_path)
    card_folder(tmp_path, name="copy.yaml")
    with pytest.raises(DrbenchError, match=r"dataset cards card\.yaml and copy\.yaml both name the dataset 'my-shop'"):
        load_cards(tmp_path / "cards")


def test_the_example_card_of_the_docs_loads(tmp_path):
    [entry] = registry.use_dataset_cards([SHOP / "shop.yaml"])
    data = load_dataset(entry.name, tmp_path)
    assert (entry.name, data.n_users, data.n_items, data.n_interactions, data.has_timestamps) == ("tiny-shop", 48, 30, 288, True)
    assert Path(registry.REGISTRY["tiny-shop"].sources[0].file(tmp_path)) == SHOP / "shop.inter"
