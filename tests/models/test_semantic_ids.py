"""Semantic IDs: quantizers on planted clusters, the bijection after collisions, the report, caching, the offline text model."""

import socket

import numpy as np
import pytest

import bench.models.semantic_ids as sid
from bench.errors import DrbenchError
from bench.run.config import build_config
from bench.models.semantic_ids import (SemanticIdConfig, build_semantic_ids, codebook_report, cooccurrence, disambiguate, kmeans,
                                   optimized_product_quantize, product_quantize, residual_kmeans)
from bench.data.sequences import Sequences
from tests.conftest import MIRROR
from tests.planted import planted_split


def blobs(rng, n_centres, dim, scale, per_centre):
    """Points around ``n_centres`` well separated centres: (points, true cluster of each)."""
    centres = rng.normal(size=(n_centres, dim)) * scale
    labels = np.repeat(np.arange(n_centres), per_centre)
    return centres[labels] + rng.normal(size=(len(labels), dim)) * 1e-3, labels


def same_partition(a, b):
    """True when labelings a and b group the points identically (up to renaming)."""
    return len(set(zip(a.tolist(), b.tolist()))) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_recovers_planted_clusters_and_is_seeded():
    points, labels = blobs(np.random.default_rng(0), 8, 16, 10.0, 40)
    centroids, assignment = kmeans(points, 8, 25, np.random.default_rng(1))
    assert same_partition(assignment, labels)
    np.testing.assert_array_equal(assignment, kmeans(points, 8, 25, np.random.default_rng(1))[1])
    assert len(kmeans(points[:3], 8, 5, np.random.default_rng(0))[0]) == 3  # never more centroids than distinct points


def test_residual_kmeans_round_trip_on_two_level_clusters():
    rng = np.random.default_rng(0)
    coarse, fine = rng.normal(size=(4, 8)) * 10.0, rng.normal(size=(4, 8))
    a, b = np.repeat(np.arange(4), 4 * 6), np.tile(np.repeat(np.arange(4), 6), 4)
    points = coarse[a] + fine[b] + rng.normal(size=(len(a), 8)) * 1e-3
    codes, reconstruction, sizes = residual_kmeans(points, 2, 4, 30, np.random.default_rng(0))
    assert sizes == [4, 4]
    assert same_partition(codes[:, 0], a) and same_partition(codes[:, 1], b)  # coarse digit first, then the fine one
    assert np.abs(points - reconstruction).max() < 0.01


def test_product_quantization_round_trip_and_opq_undoes_a_rotation():
    rng = np.random.default_rng(0)
    left, right = rng.normal(size=(6, 4)) * 5.0, rng.normal(size=(6, 4)) * 5.0
    a, b = np.repeat(np.arange(6), 6), np.tile(np.arange(6), 6)
    points = np.concatenate([left[a], right[b]], axis=1) + rng.normal(size=(36, 8)) * 1e-3
    codes, reconstruction, _ = product_quantize(points, 2, 6, 30, np.random.default_rng(0))
    assert same_partition(codes[:, 0], a) and same_partition(codes[:, 1], b)
    assert np.abs(points - reconstruction).max() < 0.01
    rotation = np.linalg.qr(rng.normal(size=(8, 8)))[0]
    rotated = points @ rotation  # the two independent slices are mixed: plain PQ loses them
    error = lambda result: ((rotated - result[1]) ** 2).sum() / (rotated**2).sum()
    assert error(optimized_product_quantize(rotated, 2, 6, 30, 10, np.random.default_rng(0))) < \
        0.5 * error(product_quantize(rotated, 2, 6, 30, np.random.default_rng(0)))


def test_disambiguation_makes_item_to_sid_a_bijection():
    codes = np.array([[1, 2], [0, 0], [1, 2], [3, 1], [1, 2], [0, 0]])
    unique = disambiguate(codes)
    assert unique[:, :2].tolist() == codes.tolist()
    assert unique[:, 2].tolist() == [0, 0, 1, 0, 2, 1]  # numbered within each group in item order
    assert len(np.unique(unique, axis=0)) == len(codes)
    report = codebook_report(codes, [4, 3])
    assert report["collision_rate"] == pytest.approx(5 / 6) and report["collision_groups"] == 2
    assert report["max_group_size"] == 3 and report["n_digits"] == 3
    first_digit_shares = np.array([3, 2, 1]) / 6  # values 1, 0, 3
    assert report["perplexity_1"] == pytest.approx(np.exp(-(first_digit_shares * np.log(first_digit_shares)).sum()))


def test_cooccurrence_counts_pairs_within_the_window_of_one_row_only():
    train = Sequences.from_lists([[1, 2, 3], [3, 1]])
    counts = cooccurrence(train, 3, window=1).toarray()
    assert counts[1, 2] == counts[2, 1] == 1 and counts[2, 3] == 1
    assert counts[1, 3] == counts[3, 1] == 1  # adjacent only in the second row; two apart in the first
    assert cooccurrence(train, 3, window=2).toarray()[1, 3] == 2


@pytest.mark.parametrize("quantizer", ["rq", "pq", "opq"])
def test_collaborative_sids_from_training_sequences_are_one_to_one_and_cached(tmp_path, monkeypatch, quantizer):
    split = planted_split()
    config = SemanticIdConfig(quantizer=quantizer, levels=2, codebook_size=8, collab_dim=16)
    built = build_semantic_ids(config, split.n_items, train=split.train, cache_dir=tmp_path)
    assert built.codes.shape == (split.n_items + 1, 3) and built.codes[0].tolist() == [0, 0, 0]
    assert len(np.unique(built.codes[1:], axis=0)) == split.n_items
    assert all((built.codes[1:, d] < size).all() for d, size in enumerate(built.vocab_sizes))
    report = built.report
    assert 0.0 <= report["collision_rate"] < 1.0 and 1.0 <= report["perplexity_1"] <= 8.0 and report["n_digits"] == 3

    monkeypatch.setattr(sid, "quantize", lambda *args: pytest.fail("a cached configuration was rebuilt"))
    again = build_semantic_ids(config, split.n_items, train=split.train, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.codes, built.codes)
    assert again.report == report and again.vocab_sizes == built.vocab_sizes
    with pytest.raises(pytest.fail.Exception):  # another seed is another cache entry
        build_semantic_ids(SemanticIdConfig(**{**config.__dict__, "sid_seed": 1}), split.n_items, train=split.train, cache_dir=tmp_path)


def test_default_cache_is_under_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("DRBENCH_SID_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert sid.default_sid_cache_dir() == tmp_path / "drbench" / "sids"
    monkeypatch.setenv("DRBENCH_SID_CACHE", str(tmp_path / "elsewhere"))
    assert sid.default_sid_cache_dir() == tmp_path / "elsewhere"


@pytest.mark.parametrize("values, message", [({"sid_source": "image"}, "sid_source"), ({"quantizer": "vq"}, "quantizer"),
                                             ({"levels": 0}, "levels"), ({"quantizer": "pq", "pca_dim": 2, "levels": 3}, "pca_dim")])
def test_config_rejects_bad_values(values, message):
    with pytest.raises(DrbenchError, match=message):
        build_config(SemanticIdConfig, values, "params")


def test_text_source_needs_one_text_per_item(tmp_path):
    with pytest.raises(DrbenchError, match="one text per item.*sid_source: collaborative"):
        build_semantic_ids(SemanticIdConfig(sid_source="text"), 3, texts=None, cache_dir=tmp_path)


@pytest.mark.skipif(not (MIRROR / "ml-100k" / "u.item").is_file(), reason="dataset mirror ../shared/data not present")
def test_embedding_model_loads_offline_and_gives_text_sids(tmp_path, monkeypatch):
    from bench.data import load_dataset
    from bench.data.item_text import item_texts

    def no_network(*args, **kwargs):
        raise OSError("the network was used")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    vectors = sid.text_embeddings(["Toy Story (1995). Genres: Animation", "Toy Story 2 (1999). Genres: Animation",
                                   "Schindler's List (1993). Genres: Drama, War"])
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]

    data = load_dataset("ml-100k", MIRROR, cache_dir=tmp_path / "data")
    texts = item_texts("ml-100k", MIRROR, data.item_ids)[:301]  # the first 300 movies keep the test short
    # PCA first: residuals of 384-dim text vectors are near-isotropic noise that k-means lumps into few codes
    built = build_semantic_ids(SemanticIdConfig(sid_source="text", levels=3, codebook_size=64, pca_dim=32), 300,
                               texts=texts, cache_dir=tmp_path)
    assert len(np.unique(built.codes[1:], axis=0)) == 300
    assert built.report["perplexity_2"] > 20 and built.report["collision_rate"] < 0.2
    assert list(tmp_path.glob("text-embeddings-*.npz"))  # embeddings are cached apart from the quantizer settings
