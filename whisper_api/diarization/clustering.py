"""Speakers from window embeddings: spectral clustering over pruned cosine affinities.

A threshold on cosine similarity chosen in advance proved fragile (its working range moves with
the voices, the sentence and the noise). Spectral clustering asks only how the affinities are
structured: each window keeps its strongest affinities (pruning turns the similarity matrix into
a neighbour graph), the graph Laplacian's smallest eigenvalues stay near zero once per group of
windows that hang together, and the largest gap among them gives the number of speakers
(the eigengap heuristic; Park et al., "Auto-tuning spectral clustering for speaker diarization",
2019). k-means on the matching eigenvectors then labels the windows.
"""

from __future__ import annotations

import numpy as np

MAX_SPEAKERS = 10
# Each window keeps its most similar 15% of windows (at least MIN_NEIGHBOURS): fewer than a
# speaker who talks a sixth of the time has windows, so a speaker's windows link mostly to each other.
NEIGHBOUR_FRACTION = 0.15
MIN_NEIGHBOURS = 4
# Below this many windows there is too little for a spectral picture: windows are joined
# greedily while their groups' mean similarity stays above SAME_SPEAKER_SIMILARITY.
MIN_SPECTRAL_WINDOWS = 12
SAME_SPEAKER_SIMILARITY = 0.5
# Two clusters whose centroids are this similar are one speaker split in two (3D-Speaker merges at 0.8).
MERGE_SIMILARITY = 0.8
KMEANS_RESTARTS = 10
# An hour has 4,800 windows: a dense affinity matrix of that size costs 180 MB per copy and its
# eigen-decomposition minutes on a laptop. Beyond this many, an evenly spaced subset is clustered
# and every window joins the speaker whose centroid it is most like.
MAX_CLUSTERED_WINDOWS = 2000
SPARSE_EIGEN_SIZE = 300


def cluster(embeddings: np.ndarray, max_speakers: int = MAX_SPEAKERS, speakers: int | None = None) -> np.ndarray:
    """Labels 0..k-1 of unit-length embeddings (n, d); `speakers` fixes k when it is known."""
    count = embeddings.shape[0]
    if count == 0:
        return np.zeros(0, dtype=int)
    if count == 1:
        return np.zeros(1, dtype=int)
    if count > MAX_CLUSTERED_WINDOWS:
        subset = np.linspace(0, count - 1, MAX_CLUSTERED_WINDOWS).round().astype(int)
        subset_labels = cluster(embeddings[subset], max_speakers, speakers)
        centroids = np.stack([embeddings[subset][subset_labels == label].mean(axis=0) for label in np.unique(subset_labels)])
        return relabel_by_first_appearance(np.argmax(embeddings @ centroids.T, axis=1))
    similarity = np.clip(embeddings @ embeddings.T, -1.0, 1.0)
    if count < MIN_SPECTRAL_WINDOWS and speakers is None:
        labels = agglomerate(similarity)
    else:
        labels = spectral(similarity, max_speakers, speakers)
    if speakers is None:
        labels = merge_similar(labels, embeddings)
    return relabel_by_first_appearance(labels)


def pruned_affinity(similarity: np.ndarray) -> np.ndarray:
    """Each row keeps its strongest neighbours; symmetrised; no self-loops; no negative weights."""
    count = similarity.shape[0]
    keep = min(count - 1, max(MIN_NEIGHBOURS, int(np.ceil(NEIGHBOUR_FRACTION * count))))
    affinity = np.where(np.eye(count, dtype=bool), -np.inf, similarity)
    threshold = -np.sort(-affinity, axis=1)[:, keep - 1 : keep]
    affinity = np.where(affinity >= threshold, np.maximum(similarity, 0.0), 0.0)
    affinity = 0.5 * (affinity + affinity.T)
    np.fill_diagonal(affinity, 0.0)
    return affinity


def spectral(similarity: np.ndarray, max_speakers: int, speakers: int | None) -> np.ndarray:
    affinity = pruned_affinity(similarity)
    degree = affinity.sum(axis=1)
    inverse_root = 1.0 / np.sqrt(np.maximum(degree, 1e-10))
    # symmetric normalised Laplacian: eigenvalues in [0, 2] whatever the clip's length
    laplacian = np.eye(len(degree)) - inverse_root[:, None] * affinity * inverse_root[None, :]
    limit = min(max_speakers, len(degree) - 1)
    eigenvalues, eigenvectors = smallest_eigenpairs(laplacian, limit + 1)
    if speakers is None:
        gaps = np.diff(eigenvalues[: limit + 1])
        speakers = int(np.argmax(gaps)) + 1 if len(gaps) else 1
    speakers = max(1, min(speakers, len(degree)))
    spectral_embedding = eigenvectors[:, :speakers]
    norms = np.linalg.norm(spectral_embedding, axis=1, keepdims=True)
    return kmeans(spectral_embedding / np.maximum(norms, 1e-10), speakers)


def smallest_eigenpairs(laplacian: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The `count` smallest eigenvalues (ascending) and their eigenvectors. Large matrices go to
    ARPACK on the sparse graph (1.5 s for 2,000 windows where a full decomposition took 40 s on a
    busy 2-core CPU); small ones, or ARPACK failing to converge, to the dense solver."""
    size = laplacian.shape[0]
    if size > SPARSE_EIGEN_SIZE and count < size - 1:
        from scipy.sparse import csr_matrix
        from scipy.sparse.linalg import ArpackError, eigsh

        try:
            values, vectors = eigsh(csr_matrix(laplacian), k=count, which="SA")
            order = np.argsort(values)
            return values[order], vectors[:, order]
        except ArpackError:
            pass
    values, vectors = np.linalg.eigh(laplacian)
    return values[:count], vectors[:, :count]


def kmeans(points: np.ndarray, clusters: int, iterations: int = 100) -> np.ndarray:
    """k-means++ seeded from a fixed seed (the same clip gets the same labels), best of a few runs."""
    if clusters == 1:
        return np.zeros(len(points), dtype=int)
    generator = np.random.default_rng(0)
    best_labels, best_inertia = np.zeros(len(points), dtype=int), np.inf
    for _ in range(KMEANS_RESTARTS):
        centres = [points[generator.integers(len(points))]]
        for _ in range(1, clusters):
            distances = np.min([((points - centre) ** 2).sum(axis=1) for centre in centres], axis=0)
            total = distances.sum()
            choice = generator.choice(len(points), p=distances / total) if total > 0 else generator.integers(len(points))
            centres.append(points[choice])
        centre_array = np.array(centres)
        for _ in range(iterations):
            distances = ((points[:, None, :] - centre_array[None, :, :]) ** 2).sum(axis=2)
            labels = distances.argmin(axis=1)
            updated = np.array([
                points[labels == index].mean(axis=0) if np.any(labels == index) else centre_array[index]
                for index in range(clusters)
            ])
            if np.allclose(updated, centre_array):
                break
            centre_array = updated
        inertia = float(((points - centre_array[labels]) ** 2).sum())
        if inertia < best_inertia:
            best_labels, best_inertia = labels, inertia
    return best_labels


def agglomerate(similarity: np.ndarray) -> np.ndarray:
    """Average-linkage joining while the closest two groups are the same speaker."""
    groups = [[index] for index in range(similarity.shape[0])]
    while len(groups) > 1:
        best, pair = -np.inf, (0, 1)
        for first in range(len(groups)):
            for second in range(first + 1, len(groups)):
                mean = float(similarity[np.ix_(groups[first], groups[second])].mean())
                if mean > best:
                    best, pair = mean, (first, second)
        if best < SAME_SPEAKER_SIMILARITY:
            break
        groups[pair[0]] += groups.pop(pair[1])
    labels = np.zeros(similarity.shape[0], dtype=int)
    for label, members in enumerate(groups):
        labels[members] = label
    return labels


def merge_similar(labels: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    labels = labels.copy()
    while True:
        present = np.unique(labels)
        if len(present) < 2:
            return labels
        centroids = np.array([embeddings[labels == label].mean(axis=0) for label in present])
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-10)
        similarity = centroids @ centroids.T
        np.fill_diagonal(similarity, -np.inf)
        first, second = np.unravel_index(np.argmax(similarity), similarity.shape)
        if similarity[first, second] < MERGE_SIMILARITY:
            return labels
        labels[labels == present[second]] = present[first]


def relabel_by_first_appearance(labels: np.ndarray) -> np.ndarray:
    mapping: dict[int, int] = {}
    for label in labels:
        mapping.setdefault(int(label), len(mapping))
    return np.array([mapping[int(label)] for label in labels], dtype=int)
