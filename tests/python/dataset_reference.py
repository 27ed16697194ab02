"""Reference values for tests/dataset_parity.rs, computed with NumPy and scikit-image.

Usage: dataset_reference.py DIR

DIR/manifest.json lists the cases the Rust test wrote (raw little-endian arrays in DIR).
For each case this script computes the reference result and writes DIR/results.json
(scalars, as exact floats) plus raw output arrays next to the inputs:

- "percentile": np.percentile(a, q) with the default linear method, one scalar q per call
  (float32 arrays are interpolated in float32, integer arrays in float64).
- "stretch": the per-channel contrast stretch of docs/published-code.md section 1.3 on
  a (C, Z, Y, X) array: low/high percentiles, clip, low -= 10 when low == high, rescale
  (v - low) / (high - low) * 255, cast to uint8 by truncation. Output: uint8 array.
- "pad": np.pad(a, ((bz, az), (by, ay), (bx, ax)), mode="reflect") on a 3-D array.
- "otsu": skimage.filters.threshold_otsu(a).
"""

import json
import sys
from pathlib import Path

import numpy as np
from skimage.filters import threshold_otsu


def load(directory, case):
    data = np.fromfile(directory / case["file"], dtype=np.dtype(case["dtype"]).newbyteorder("<"))
    return data.reshape(case["shape"]).astype(case["dtype"])


def stretch(channel, low_q, high_q):
    low = np.percentile(channel, low_q)
    high = np.percentile(channel, high_q)
    clipped = np.clip(channel, low, high)
    bounds = (float(low), float(high))
    if low == high:
        low = low - 10
    return ((clipped - low) / (high - low) * 255).astype(np.uint8), bounds


def main():
    directory = Path(sys.argv[1])
    manifest = json.loads((directory / "manifest.json").read_text())
    results = {}
    for case in manifest:
        name = case["name"]
        a = load(directory, case)
        kind = case["kind"]
        if kind == "percentile":
            results[name] = [float(np.percentile(a, float(q))) for q in case["q"]]
        elif kind == "stretch":
            out = np.empty(a.shape, dtype=np.uint8)
            bounds = []
            for c, (lo, hi) in enumerate(case["percentiles"]):
                out[c], (low, high) = stretch(a[c], float(lo), float(hi))
                bounds.append([low, high])
            out.astype("<u1").tofile(directory / (name + ".out"))
            results[name] = bounds
        elif kind == "pad":
            widths = list(zip(case["before"], case["after"]))
            out = np.pad(a, widths, mode="reflect")
            out.astype(a.dtype.newbyteorder("<")).tofile(directory / (name + ".out"))
            results[name] = list(out.shape)
        elif kind == "otsu":
            results[name] = float(threshold_otsu(a))
        else:
            raise SystemExit(f"unknown case kind {kind!r}")
    (directory / "results.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()
