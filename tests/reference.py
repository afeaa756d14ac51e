"""Independent float64 references used by several tests (plain numpy, no attnscope code)."""

import numpy as np


def softmax_attention(Q, K, V, causal=False):
    """AV[b,h,f,p] = sum_m softmax_m(Q.K)[m,p] V[b,h,f,m]; causal keeps m <= p + M - P."""
    scores = np.einsum("bhep,bhem->bhmp", Q, K)
    M, P = scores.shape[2], scores.shape[3]
    if causal:
        keep = np.arange(M)[:, None] <= np.arange(P)[None, :] + M - P
        scores = np.where(keep, scores, -np.inf)
    scores = scores - scores.max(axis=2, keepdims=True)
    weights = np.exp(scores)
    weights /= weights.sum(axis=2, keepdims=True)
    return np.einsum("bhmp,bhfm->bhfp", weights, V)
