"""Seeded, mergeable sampling of a memory: keys, top-n merge and inclusion probabilities.

Pure functions, no Beam. In goes (seed, image_id, weight); out comes a key, and the
sample is the n images with the largest keys. Because the key depends only on the
seed and the image id, the sample is the same whatever the order, partitioning or
runner, and partial top-n lists merge exactly (top-n of a union = top-n of the union
of the parts' top-n).

Keys. u = blake2b(image_id, key=seed) mapped to (0, 1) (53 bits, never 0 or 1);
key = log(u) / w, the Efraimidis–Spirakis A-Res key u**(1/w) kept in log space.
- uniform mode: w = 1 for every unique image. The sample is a simple random sample
  without replacement: every image has inclusion probability pi_i = min(1, n/N).
- weighted mode: w = copies (the input records the image stands for). A-Res draws
  one image after another with probability proportional to w among those not drawn
  yet (successive sampling / PPSWOR). Its inclusion probability is NOT n*w_i/W:
  with E_j = -log(u_j)/w_j ~ Exponential(w_j) and C_i(t) = #{j != i: E_j < t},
      pi_i = integral_0^inf w_i exp(-w_i t) P(C_i(t) <= n-1) dt,
  which `ares_inclusion_probabilities` evaluates. Heavy images saturate towards 1 and
  light ones get more than their proportional share.
- per sampled image we store w, u, key and the rank-conditioned inclusion probability
  p_i = P(key_i > tau | other keys) = 1 - exp(w_i * tau), tau the (n+1)-th largest key
  (Cohen & Kaplan 2007, bottom-k sketches); sum over the sample of f_i / p_i is an
  unbiased estimate of sum over the memory of f_i in both modes. p_i = 1 when N <= n.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import itertools
import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

MAX_SEED = 2**64 - 1
_U_BITS = 53  # a float64 holds 53-bit integers exactly, so u never rounds to 0 or 1


class Candidate(NamedTuple):
    """One image as the sampler sees it: its key and where its row lives, no bytes.

    Tuple order is the sample order: larger key first, ties (practically impossible)
    broken by image_id so the order is total and the same everywhere.
    """

    key: float  # log(u) / weight, <= 0
    image_id: str
    part: str  # memory part file (path or URL) that holds the row
    weight: int
    copies: int


class Chosen(NamedTuple):
    """A sampled image: its position in the sample, key, reference and probabilities."""

    rank: int  # 0 = largest key; the first k ranks are the sample of size k (same seed)
    key: float
    image_id: str
    part: str
    weight: int
    copies: int
    u: float
    inclusion_probability: float


@functools.lru_cache(maxsize=8)
def _keyed(seed: int) -> hashlib.blake2b:
    return hashlib.blake2b(key=seed.to_bytes(8, "big"), digest_size=8)


def keyed_u64(seed: int, message: str) -> int:
    """The 64-bit keyed hash (blake2b, keyed by the seed) every seeded choice of memgen is
    made by: uniform and independent per message, the same on every worker."""
    hasher = _keyed(seed).copy()  # copying the keyed state is 2x faster than keying again
    hasher.update(message.encode())
    return int.from_bytes(hasher.digest(), "big")


def unit(seed: int, image_id: str) -> float:
    """u in (0, 1) from a keyed hash of the image id: uniform and independent per id."""
    return ((keyed_u64(seed, image_id) >> (64 - _U_BITS)) + 0.5) / 2**_U_BITS


def weight_of(copies: int, mode: str) -> int:
    if mode == "weighted":
        return max(1, copies)  # a memory row stands for at least itself
    return 1


def sample_key(seed: int, image_id: str, weight: int) -> float:
    """log of the A-Res key u**(1/weight); monotone in the key, so top-n is unchanged."""
    return math.log(unit(seed, image_id)) / weight


def candidates(seed: int, mode: str, part: str, image_ids: Iterable[str],
               copies: Iterable[int]) -> Iterable[Candidate]:
    for image_id, c in zip(image_ids, copies, strict=True):
        w = weight_of(c, mode)
        yield Candidate(sample_key(seed, image_id, w), image_id, part, w, c)


def top(items: Iterable[Sequence], capacity: int) -> list:
    """The `capacity` largest candidates, largest first (a part's contribution to the merge)."""
    return heapq.nlargest(capacity, list(items))  # a list: nlargest just sorts when it is short


def merge(tops: Iterable[list], capacity: int) -> list:
    """The `capacity` largest of several `top` lists, largest first.

    Timsort finds the lists' descending runs, so this is about linear in their length.
    Plain tuples and Candidates compare alike: Beam moves them as plain tuples, which it
    encodes ~10x faster than NamedTuples (those are pickled one by one).
    """
    return sorted(itertools.chain.from_iterable(tops), reverse=True)[:capacity]


def choose(top_candidates: Iterable[Sequence], n: int, seed: int) -> tuple[list[Chosen], float | None]:
    """The sample from the n+1 largest candidates (Candidates or plain tuples), and tau.

    tau, the (n+1)-th key, conditions the inclusion probabilities; it is None when
    there are at most n candidates, and then every image is taken with probability 1.
    """
    ordered = [Candidate._make(c) for c in sorted(top_candidates, reverse=True)]
    tau = ordered[n].key if len(ordered) > n else None
    chosen = [
        Chosen(rank, *c, unit(seed, c.image_id),
               1.0 if tau is None else conditional_inclusion(c.weight, tau))
        for rank, c in enumerate(ordered[:n])
    ]
    return chosen, tau


def conditional_inclusion(weight: int, tau: float) -> float:
    """P(key > tau) for an image of this weight: 1 - exp(weight * tau), tau <= 0."""
    return -math.expm1(weight * tau)


def uniform_inclusion_probability(n: int, population: int) -> float:
    return min(1.0, n / population) if population else 0.0


def ares_inclusion_probabilities(weights: Sequence[float], n: int) -> np.ndarray:
    """Exact A-Res inclusion probabilities pi_i (see the module docstring).

    Numerical integration with a Poisson-binomial count of the other keys; cost
    O(N^2 n) per quadrature point, meant for audits and tests on small populations.
    """
    from scipy import integrate

    w = np.asarray(weights, dtype=float)
    if n >= len(w):
        return np.ones(len(w))
    if n <= 0:
        return np.zeros(len(w))

    def at_most(others: np.ndarray, t: float) -> float:
        """P(fewer than n of `others` have E_j < t)."""
        p = -np.expm1(-others * t)
        dist = np.zeros(n)
        dist[0] = 1.0
        for pj in p:  # distribution of the count, truncated at n-1
            dist[1:] = dist[1:] * (1 - pj) + dist[:-1] * pj
            dist[0] *= 1 - pj
        return float(dist.sum())

    # Integrate over x = log t: the density of E_i, w_i t exp(-w_i t) in x, then spans the
    # scales 1/w_j of every weight evenly (in t or in s = exp(-w_i t), a light image among
    # heavy ones has all its mass in a spike the quadrature misses: pi = 0). Below
    # 1e-12/max(w) and above 60/w_i lie less than 1e-12 of it.
    scales: list[float] = []  # breakpoints at the weights' scales, one per factor e at most
    for x in sorted({-math.log(v) for v in w}):
        if not scales or x > scales[-1] + 1:
            scales.append(x)
    result = np.empty(len(w))
    for i, wi in enumerate(w):
        others = np.delete(w, i)
        lo, hi = math.log(1e-12 / w.max()), math.log(60 / wi)
        value, _ = integrate.quad(
            lambda x, o=others, wi=wi: wi * math.exp(x - wi * math.exp(x)) * at_most(o, math.exp(x)),
            lo, hi, points=[x for x in scales if lo < x < hi], limit=200, epsabs=0.0, epsrel=1e-8)
        result[i] = value
    return result
