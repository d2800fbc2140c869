"""The ranked-list file of --score: what it accepts, and one clear line for each thing it refuses."""

import hashlib

import numpy as np
import pytest

from bench.data.sequences import Sequences
from bench.errors import DrbenchError
from bench.protocol.ranked_lists import read_ranked_lists
from bench.protocol.splits import leave_one_out

USERS = np.array(["a", "b", "c", "d"])  # raw user ids of dataset rows 0..3
ITEMS = np.array(["[PAD]", "i1", "i2", "i3", "i4", "i5"])  # raw item ids of items 0 (padding)..5
SPLIT = leave_one_out(Sequences.from_lists([[1, 2, 3, 4], [2, 3, 4], [1, 5], [5, 4, 3, 2, 1]]), 5)  # c: too short to test
HEADER = f"# split {SPLIT.fingerprint}\n"


def read(tmp_path, text: str | bytes):
    path = tmp_path / "lists.tsv"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return read_ranked_lists(path, SPLIT, USERS, ITEMS)


def test_lists_come_back_in_the_test_users_order_as_internal_ids(tmp_path):
    text = HEADER + "d\ti5\ti1\n\n# a comment\nb\ti2\ti3\ti4\t\na\ti3\n"
    lists = read(tmp_path, text)
    assert SPLIT.test.users.tolist() == [0, 1, 3]
    assert lists.lists.tolist() == [[3, 0, 0], [2, 3, 4], [5, 1, 0]]  # a, b, d; a shorter list ends in empty slots
    assert lists.list_length == 3 and lists.source == "lists.tsv"
    assert lists.sha256 == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("body, message", [
    ("", "lists.tsv is empty; it needs the line '# split "),
    ("a\ti1\n", "lists.tsv: line 1 must be '# split <fingerprint>'"),
    ("# split 000000000000\na\ti1\n", "lists.tsv was made for split 000000000000, but this suite and dataset have split "),
    (HEADER, "lists.tsv has no ranked lists after its first line"),
    (HEADER + "zz\ti1\n", "lists.tsv line 2: unknown user id 'zz'; user ids are the user_id column of the export's users.tsv"),
    (HEADER + "a i1 i2\n", "unknown user id 'a i1 i2' \\(fields are separated by tabs\\)"),
    (HEADER + "c\ti1\n", "line 2: user 'c' is not a test user of this split"),
    (HEADER + "a\ti1\nb\ti2\na\ti3\n", "line 4: user 'a' is listed twice \\(first on line 2\\)"),
    (HEADER + "a\n", "line 2: user 'a' has an empty list"),
    (HEADER + "a\ti1\ti9\n", "line 2: unknown item id 'i9' in the list of user 'a'"),
    (HEADER + "a\t[PAD]\n", "unknown item id '\\[PAD\\]'"),  # the padding row of the catalogue is no item
    (HEADER + "a\ti1\ti2\ti1\n", "line 2: item 'i1' appears twice in the list of user 'a'"),
    (HEADER + "a\ti1\nb\ti2\n", "lists.tsv has no list for 1 of the 3 test users \\('d'\\); every test user needs a list"),
])
def test_each_problem_is_one_line_naming_it(tmp_path, body, message):
    with pytest.raises(DrbenchError, match=message) as refused:
        read(tmp_path, body)
    assert "\n" not in str(refused.value)


def test_a_file_that_is_not_utf8_or_not_there(tmp_path):
    with pytest.raises(DrbenchError, match="not UTF-8 text"):
        read(tmp_path, HEADER.encode() + b"a\t\xff\n")
    with pytest.raises(DrbenchError, match="--score: file not found: "):
        read_ranked_lists(tmp_path / "absent.tsv", SPLIT, USERS, ITEMS)
    with pytest.raises(DrbenchError, match="is a directory"):
        read_ranked_lists(tmp_path, SPLIT, USERS, ITEMS)
