"""What tifffile and NumPy make of a TIFF file: the voxels and per-channel statistics.

Usage: tiff_reference.py FILE OUT_RAW

Writes the voxels of the file's first series, rearranged to (C, Z, Y, X), little-endian, to
OUT_RAW, and prints JSON on stdout in the shape of `seglab inspect --json`:
{"shape": [C, Z, Y, X], "dtype": .., "channels": [{"min", "max", "mean", "sum"}]}. Integer
sums are exact Python integers, float sums are exact (math.fsum); NaN is ignored by min and
max and makes sum and mean null, as are infinite results.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).parent))
from tiff_fixtures import to_czyx  # noqa: E402


def finite_or_none(v):
    return v if math.isfinite(v) else None


def channel_stats(ch):
    if ch.dtype.kind == "u":
        total = int(ch.astype(np.uint64).sum())
        return {"min": int(ch.min()), "max": int(ch.max()), "mean": total / ch.size,
                "sum": total}
    values = ch.astype(np.float64).reshape(-1)
    nan = np.isnan(values)
    rest = values[~nan]
    lo = float(rest.min()) if rest.size else None
    hi = float(rest.max()) if rest.size else None
    if nan.any():
        total = math.nan
    elif np.isinf(values).any():
        total = float(values.sum())
    else:
        total = math.fsum(values)
    return {"min": None if lo is None else finite_or_none(lo),
            "max": None if hi is None else finite_or_none(hi),
            "mean": finite_or_none(total / values.size), "sum": finite_or_none(total)}


def main():
    path, out = Path(sys.argv[1]), Path(sys.argv[2])
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        czyx = to_czyx(series.asarray(), series.axes)
    czyx.astype(czyx.dtype.newbyteorder("<")).tofile(out)
    print(json.dumps({"shape": list(czyx.shape), "dtype": str(czyx.dtype),
                      "channels": [channel_stats(ch) for ch in czyx]}))


if __name__ == "__main__":
    main()
