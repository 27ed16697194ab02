"""Writes tests/golden/stats/reference.json: fixed paired differences and scipy.stats' values
for them, which tests/stats_parity.rs compares seglab::stats against.

Run: $(scripts/python-env) tests/python/stats_reference.py
(scipy 1.17.1, numpy 2.4.6 as pinned in scripts/python-requirements.txt.)

Exact quantities (Wilcoxon exact / normal / permutation-with-ties, exact sign-flip
permutation, ttest_rel) must match to 1e-9. Monte-Carlo ones (the sign-flip test above its
enumeration limit, the stratified bootstrap) are computed here with 10^6 resamples, so their
own Monte-Carlo error is small next to the test's tolerance for seglab's 10^5 / 10^4.
"""

import json
import pathlib

import numpy as np
from scipy import stats

OUT = pathlib.Path(__file__).resolve().parent.parent / "golden" / "stats" / "reference.json"
rng = np.random.default_rng(20261207)


def distinct(n, scale, shift):
    """n differences rounded to 1e-4 with distinct absolute values and no zeros."""
    while True:
        d = np.round(rng.normal(shift, scale, n), 4)
        if len(set(np.abs(d))) == n and np.all(d != 0):
            return d


def ties(n, step, shift):
    """n differences on a coarse grid: ties and zeros."""
    return np.round(rng.normal(shift, 3 * step, n) / step) * step


def wilcoxon_case(name, d):
    r = stats.wilcoxon(d)
    return {"name": name, "d": d.tolist(), "statistic": float(r.statistic), "p": float(r.pvalue)}


def permutation_case(name, d, n_resamples):
    mean = lambda x, axis: np.mean(x, axis=axis)
    r = stats.permutation_test((d,), mean, permutation_type="samples", vectorized=True,
                               n_resamples=n_resamples, alternative="two-sided",
                               rng=np.random.default_rng(1))
    exact = 2 ** len(d) <= n_resamples
    return {"name": name, "d": d.tolist(), "p": float(r.pvalue), "exact": exact}


def bootstrap_case(name, strata):
    def pooled_mean(*samples, axis):
        return np.mean(np.concatenate(samples, axis=axis), axis=axis)

    r = stats.bootstrap([np.asarray(s) for s in strata], pooled_mean, method="percentile",
                        n_resamples=1_000_000, vectorized=True, paired=False,
                        rng=np.random.default_rng(2), batch=100_000)
    return {"name": name, "strata": [list(map(float, s)) for s in strata],
            "low": float(r.confidence_interval.low), "high": float(r.confidence_interval.high),
            "standard_error": float(r.standard_error)}


def ttest_case(name, a, b):
    r = stats.ttest_rel(a, b)
    return {"name": name, "a": a.tolist(), "b": b.tolist(),
            "statistic": float(r.statistic), "p": float(r.pvalue)}


def main():
    wilcoxon = [
        wilcoxon_case("exact n=12", distinct(12, 0.05, 0.02)),
        wilcoxon_case("exact n=50", distinct(50, 0.05, 0.01)),
        wilcoxon_case("exact one negative", np.array([0.3, 0.1, -0.05, 0.2, 0.4])),
        wilcoxon_case("permutation ties and zeros n=11", ties(11, 0.01, 0.01)),
        wilcoxon_case("normal ties n=30", ties(30, 0.01, 0.005)),
        wilcoxon_case("normal n=60", distinct(60, 0.05, 0.01)),
    ]
    permutation = [
        permutation_case("exact n=12", distinct(12, 0.05, 0.02), 100_000),
        permutation_case("exact n=16 ties", ties(16, 0.01, 0.01), 100_000),
        permutation_case("monte carlo n=30", distinct(30, 0.05, 0.012), 1_000_000),
    ]
    bootstrap = [
        bootstrap_case("three folds", [distinct(5, 0.05, 0.02), distinct(4, 0.05, 0.0),
                                       distinct(6, 0.08, 0.03)]),
        bootstrap_case("one fold", [distinct(9, 0.1, -0.02)]),
    ]
    a = np.round(rng.uniform(0.6, 0.9, 10), 4)
    b = np.round(a - rng.normal(0.01, 0.02, 10), 4)
    ttest = [ttest_case("ten cases", a, b)]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    doc = {"scipy": __import__("scipy").__version__, "numpy": np.__version__,
           "wilcoxon": wilcoxon, "permutation": permutation, "bootstrap": bootstrap,
           "ttest_rel": ttest}
    OUT.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
