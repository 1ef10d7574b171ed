"""The user-item graph of NGCF and LightGCN, built once in SciPy: the binary
interaction matrix, its normalised bipartite adjacency, and the number of
edges the models' constructors size their graph weights by."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from keras_rec.data.interactions import binary_csr


def interaction_matrix(interactions, num_users: int, num_items: int) -> sp.csr_matrix:
    """Binary `[num_users, num_items]` CSR of `Interactions` or a SciPy matrix."""
    if hasattr(interactions, "to_csr"):
        matrix = interactions.to_csr()
    elif sp.issparse(interactions):
        matrix = binary_csr(interactions)  # a copy: the caller's is kept
    else:
        raise ValueError(
            "`interactions` must be an `Interactions` or a SciPy sparse matrix. "
            f"Received {type(interactions).__name__}"
        )
    if matrix.shape != (num_users, num_items):
        raise ValueError(
            f"`interactions` must have shape (num_users={num_users}, "
            f"num_items={num_items}). Received shape {matrix.shape}"
        )
    return matrix


ADJACENCY_KINDS = ("symmetric", "mean_self_loops")


def check_adjacency_kind(kind: str) -> None:
    """Raises a `ValueError` naming the known kinds if `kind` is not one."""
    if kind not in ADJACENCY_KINDS:
        raise ValueError(
            f"`adjacency` must be one of {ADJACENCY_KINDS}. Received adjacency={kind!r}"
        )


def adjacency_nonzeros(num_edges: int, num_nodes: int, kind: str) -> int:
    """Stored nonzeros of the `kind` adjacency of a graph of `num_edges` pairs."""
    check_adjacency_kind(kind)
    return 2 * num_edges + (num_nodes if kind == "mean_self_loops" else 0)


def normalized_adjacency(
    matrix: sp.csr_matrix, kind: str = "symmetric"
) -> sp.csr_matrix:
    """The normalised adjacency of the bipartite graph, `A = [[0, R], [R^T, 0]]`.

    `kind="symmetric"` (the papers' formula, and LightGCN's code):
    `D^-1/2 A D^-1/2`, isolated nodes with zero rows (as the reference
    code's `d_inv[isinf] = 0`). `kind="mean_self_loops"` (what NGCF's code
    builds by default, its `norm` adjacency): `D~^-1 (A + I)` with
    `D~ = D + I`, each row the mean over the node and its neighbours; not
    symmetric. Nodes are the users then the items. Row-major with sorted
    indices.
    """
    check_adjacency_kind(kind)
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    adjacency = sp.bmat([[None, matrix], [matrix.T, None]], format="csr")
    if kind == "mean_self_loops":
        adjacency = adjacency + sp.identity(adjacency.shape[0], format="csr")
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    scale = np.zeros_like(degree)
    if kind == "symmetric":
        scale[degree > 0] = degree[degree > 0] ** -0.5
        normalized = sp.diags(scale) @ adjacency @ sp.diags(scale)
    else:
        scale[degree > 0] = 1.0 / degree[degree > 0]
        normalized = sp.diags(scale) @ adjacency
    normalized = sp.csr_matrix(normalized, dtype=np.float32)
    normalized.sort_indices()
    return normalized


def resolve_num_edges(num_edges, interactions, num_users: int, num_items: int):
    """`(num_edges, matrix or None)` from the constructor arguments."""
    if interactions is None:
        if num_edges is None:
            raise ValueError(
                "Pass `interactions` (the training graph) or `num_edges` (its "
                "number of distinct (user, item) pairs, then `set_graph`)"
            )
        return num_edges, None
    matrix = interaction_matrix(interactions, num_users, num_items)
    if num_edges is not None and num_edges != matrix.nnz:
        raise ValueError(
            f"`num_edges`={num_edges} does not match the {matrix.nnz} distinct "
            "(user, item) pairs of `interactions`"
        )
    return matrix.nnz, matrix
