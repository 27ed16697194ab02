"""Checks TIFF files written by seglab the way ImageJ and tifffile read them.

Usage: tiff_verify.py MANIFEST

MANIFEST (JSON) lists {"file", "raw", "dtype", "shape": [C, Z, Y, X], "spacing": [z, y, x] or
null, "compression": "none|lzw|deflate|packbits", "bigtiff": bool}; paths are relative to the
manifest. For each file this checks with tifffile: an ImageJ hyperstack whose series has axes
ZCYX (CYX, ZYX or YX when C or Z is 1) and the voxels of the raw file (little-endian, C, Z, Y, X),
ImageJ metadata (images, channels, slices, unit=micron, spacing) and X/YResolution matching the
spacing, the compression and BigTIFF flag; and for uncompressed files that ImageJ's reader,
which takes all planes contiguously from the first page's offset, gets the same voxels.
Prints one line per problem and exits 1 if there is any.
"""

import json
import sys
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).parent))
from tiff_fixtures import same, to_czyx  # noqa: E402

COMPRESSION = {"none": 1, "lzw": 5, "deflate": 8, "packbits": 32773}


def close(a, b):
    return abs(a - b) <= 1e-9 * max(abs(a), abs(b))


def check(base, entry):
    problems = []
    name = entry["file"]
    c, z, y, x = entry["shape"]
    expected = np.fromfile(base / entry["raw"], dtype=np.dtype(entry["dtype"]).newbyteorder("<"))
    expected = expected.astype(entry["dtype"]).reshape(c, z, y, x)
    with tifffile.TiffFile(base / name) as tif:
        if not tif.is_imagej:
            problems.append("not an ImageJ file")
        series = tif.series[0]
        want_axes = ("Z" if z > 1 else "") + ("C" if c > 1 else "") + "YX"
        if series.axes != want_axes:
            problems.append(f"series axes {series.axes}, expected {want_axes}")
        data = series.asarray()
        got = to_czyx(data, series.axes)
        if not same(got, expected):
            problems.append(f"voxels differ (got {got.dtype} {got.shape})")
        if tif.is_bigtiff != entry["bigtiff"]:
            problems.append(f"bigtiff={tif.is_bigtiff}, expected {entry['bigtiff']}")
        page = tif.pages[0]
        if int(page.compression) != COMPRESSION[entry["compression"]]:
            problems.append(f"compression {page.compression}")
        meta = tif.imagej_metadata or {}
        if meta.get("images") != c * z:
            problems.append(f"images={meta.get('images')}, expected {c * z}")
        if meta.get("channels", 1) != c or meta.get("slices", 1) != z:
            problems.append(f"channels={meta.get('channels')} slices={meta.get('slices')}")
        if meta.get("frames", 1) != 1:
            problems.append(f"frames={meta.get('frames')}")
        spacing = entry["spacing"]
        if spacing is None:
            if "spacing" in meta or "XResolution" in page.tags:
                problems.append("spacing written for a volume without spacing")
        else:
            if meta.get("unit") != "micron":
                problems.append(f"unit={meta.get('unit')!r}, expected 'micron'")
            if not close(meta.get("spacing", float("nan")), spacing[0]):
                problems.append(f"spacing={meta.get('spacing')}, expected z {spacing[0]}")
            for tag, want in [("XResolution", spacing[2]), ("YResolution", spacing[1])]:
                num, den = page.tags[tag].value
                if not close(den / num, want):
                    problems.append(f"{tag} {num}/{den} is not 1/{want} pixels per micron")
        if entry["compression"] == "none":
            # ImageJ's reader: only the first directory, images × plane bytes from its offset.
            offset = page.dataoffsets[0]
            dtype = np.dtype(entry["dtype"]).newbyteorder(tif.byteorder)
            count = c * z * y * x
            raw = np.fromfile(base / name, dtype=dtype, count=count, offset=offset)
            as_imagej = np.transpose(raw.reshape(z, c, y, x), (1, 0, 2, 3)).astype(entry["dtype"])
            if not same(as_imagej, expected):
                problems.append("planes are not contiguous from the first page (ImageJ layout)")
    return [f"{name}: {p}" for p in problems]


def main():
    manifest = Path(sys.argv[1])
    entries = json.loads(manifest.read_text())
    problems = []
    for entry in entries:
        problems += check(manifest.parent, entry)
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"ok: {len(entries)} files")


if __name__ == "__main__":
    main()
