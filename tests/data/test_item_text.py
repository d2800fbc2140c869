"""Item texts: MovieLens titles and genres by internal item id, the split carrying them, and clear refusals."""

import numpy as np
import pytest

from bench.run.config import ProtocolConfig, parse_suite
from bench.errors import DrbenchError
from bench.protocol.splits import make_split
from bench.run.trial import fit_trial, make_trial_spec
from bench.run.engine import prepare_splits
from bench.data import load_dataset
from bench.data.item_text import has_item_text, item_texts
from tests.conftest import MIRROR
from tests.planted import planted_split


def needs(*files):
    return pytest.mark.skipif(not all((MIRROR / f).is_file() for f in files), reason="dataset mirror ../shared/data not present")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DRBENCH_CACHE", str(tmp_path / "cache"))


@needs("ml-100k/u.data", "ml-100k/u.item", "ml-100k/u.genre")
def test_ml100k_texts_are_titles_and_flagged_genres_by_internal_id():
    data = load_dataset("ml-100k", MIRROR)
    texts = item_texts("ml-100k", MIRROR, data.item_ids)
    assert len(texts) == data.n_items + 1 and texts[0] == ""
    by_original = dict(zip(data.item_ids[1:], texts[1:]))
    assert by_original["1"] == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    assert by_original["543"] == "Misérables, Les (1995). Genres: Drama, Musical"  # latin-1 decoded


@needs("ml-1m/sequences.txt.gz", "ml-1m/movies.dat")
def test_ml1m_texts_follow_movie_ids_and_latin1():
    data = load_dataset("ml-1m", MIRROR)
    texts = item_texts("ml-1m", MIRROR, data.item_ids)
    by_original = dict(zip(data.item_ids[1:], texts[1:]))
    assert len(texts) == 3706 + 1
    assert by_original["1"] == "Toy Story (1995). Genres: Animation, Children's, Comedy"
    assert by_original["73"] == "Misérables, Les (1995). Genres: Drama, Musical"


def test_datasets_without_texts_name_the_collaborative_fix(tmp_path):
    assert not has_item_text("amazon-beauty", MIRROR) and not has_item_text("ml-100k", tmp_path)
    with pytest.raises(DrbenchError, match="amazon-beauty' has no item texts.*sid_source: collaborative"):
        item_texts("amazon-beauty", MIRROR, np.array(["[PAD]", "B0001"]))
    with pytest.raises(DrbenchError, match="u.item.*sid_source: collaborative"):
        item_texts("ml-100k", tmp_path, np.array(["[PAD]", "1"]))


def test_text_model_on_a_split_without_texts_fails_with_one_clear_error():
    spec = make_trial_spec("amazon-beauty", "tiger-text", "tiger", 0, {"sid_source": "text"}, {}, ProtocolConfig())
    with pytest.raises(DrbenchError, match="'tiger-text' reads item texts, but dataset 'amazon-beauty' came without any.*"
                                           "use sid_source: collaborative"):
        fit_trial(spec, planted_split(n_users=20))


@needs("ml-100k/u.data", "ml-100k/u.item", "ml-100k/u.genre")
def test_prepared_split_carries_texts_outside_its_fingerprint():
    suite = parse_suite({"name": "t", "datasets": ["ml-100k"], "models": {"pop": {"model": "pop"}}})
    splits, _ = prepare_splits(suite, MIRROR, echo=lambda line: None)
    split = splits["ml-100k"]
    assert split.item_text is not None and len(split.item_text) == split.n_items + 1
    assert split.fingerprint == make_split(load_dataset("ml-100k", MIRROR)).fingerprint
