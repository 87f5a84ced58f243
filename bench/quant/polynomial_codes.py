#!/usr/bin/env python3
"""How closely a polynomial's integer crossings can stand for a codebook's boundaries.

The tensor-core probe finds a 4-bit code as floor(p(u)) for a quartic p whose crossings of
1, 2, ..., 7 are the Lloyd-Max boundaries (docs/QUANTIZATION.md, "The fifth version"). A
format built on that needs the same for every rate it stores: 2, 3 and 4 bits at dim 128 (the
integer rates' sub-vector) and at dim 64 (the halves of the fractional rates). For each, this
fits p(u) = c1 u + ... + cD u^D through (beta_k, k + 1) by least squares, its coefficients
rounded to float32 as the kernels hold them, with the highest degree D up to 4 whose p rises
until it has crossed every integer: over all of [0, 1] (no cap), or up to where it turns (the
cap, past which a kernel holds u: one more min a value); finds where it crosses each integer,
and gives the distortion of coding by those crossings while decoding with the codebook's own
centroids, against the codebook's, from the exact coordinate density (kernels/gen_codebooks.py).

    python3 bench/quant/polynomial_codes.py
"""
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'kernels'))
from gen_codebooks import Density  # noqa: E402

CODEBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'kernels', 'codebooks.h')


def table(name):
    """TQ_CODEBOOK_<name>[dim index][bits - 1] as arrays, from codebooks.h."""
    text = open(CODEBOOKS).read()
    body = text[text.index(name):]
    rows = re.findall(r'\{([^{}]*)\}', body[:body.index('};')])
    values = [np.array([float(v.strip().rstrip('f')) for v in row.split(',')]) for row in rows]
    return [values[i * 4:(i + 1) * 4] for i in range(len(values) // 4)]


def fit(boundaries, degree):
    """float32 coefficients c1..cD of p through (beta_k, k + 1)."""
    basis = np.stack([boundaries ** (j + 1) for j in range(degree)], axis=1)
    coefficients, *_ = np.linalg.lstsq(basis, np.arange(1, len(boundaries) + 1, dtype=float), rcond=None)
    return coefficients.astype(np.float32).astype(float)


def evaluate(coefficients, u):
    return sum(c * u ** (j + 1) for j, c in enumerate(coefficients))


def crossings(coefficients, count):
    """Where p crosses 1..count, and the cap (None: p rises over all of [0, 1]); or None."""
    grid = np.linspace(0.0, 1.0, 1 << 20)
    values = evaluate(coefficients, grid)
    falls = np.nonzero(np.diff(values) <= 0)[0]
    cap = None if len(falls) == 0 else grid[falls[0]]
    rising = len(values) if cap is None else falls[0] + 1
    if values[rising - 1] <= count:
        return None
    return np.interp(np.arange(1, count + 1, dtype=float), values[:rising], grid[:rising]), cap


def distortion(density, dim, boundaries, centroids):
    """E (X - c(X))^2 over X >= 0, cells split at `boundaries`, decoded to `centroids`:
    E[X^2; X >= 0] = 1 / (2 dim), less each cell's 2 c E[X; cell] - c^2 P(cell)."""
    edges = np.concatenate([[0.0], boundaries, [1.0]])
    lo, hi = edges[:-1], edges[1:]
    return 0.5 / dim - np.sum(2.0 * centroids * density.moment1(lo, hi) - centroids ** 2 * density.mass(lo, hi))


def main():
    bounds, cents = table('TQ_CODEBOOK_BOUNDARIES'), table('TQ_CODEBOOK_CENTROIDS')
    print('| dim | bits | degree | cap (u) | largest crossing offset (share of the smallest gap) | distortion, polynomial / codebook |')
    print('|---|---|---|---|---|---|')
    for dim in (64, 128):
        index = int(np.log2(dim)) - 3
        density = Density(dim)
        for bits in (2, 3, 4):
            half = 1 << (bits - 1)
            beta = bounds[index][bits - 1][half:2 * half - 1]
            centroids = cents[index][bits - 1][half:2 * half]
            for degree in range(min(4, len(beta)), 0, -1):
                coefficients = fit(beta, degree)
                result = crossings(coefficients, len(beta))
                if result is not None:
                    break
            found, cap = result
            gap = np.min(np.diff(np.concatenate([[0.0], beta])))
            ratio = distortion(density, dim, found, centroids) / distortion(density, dim, beta, centroids)
            print(f'| {dim} | {bits} | {degree} | {"none" if cap is None else f"{cap:.3f}"} | {np.max(np.abs(found - beta)) / gap:.1e} | {ratio:.6f} |')


if __name__ == '__main__':
    main()
