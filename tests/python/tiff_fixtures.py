"""Writes the TIFF parity fixtures of seglab's reader, with tifffile, plus what seglab must read.

Usage: tiff_fixtures.py OUTDIR

For every layout seglab reads (plain multi-page stacks of uint8/uint16/float32 in every
compression, classic and BigTIFF; ImageJ hyperstacks with channels, spacing and units; RGB
chunky and planar multi-sample stacks; tiles; predictors; big-endian files; single pages;
ImageJ's contiguous one-directory layout) this writes OUTDIR/<name>.tif and OUTDIR/<name>.raw:
the voxels as tifffile reads them, rearranged to (C, Z, Y, X), little-endian. OUTDIR/manifest.json
lists each fixture with its dtype, shape [C, Z, Y, X] and spacing [z, y, x] in micrometres (or
null). It also writes invalid files under "bad", each with a fragment of the error seglab must give.
"""

import json
import sys
from pathlib import Path

import numpy as np
import tifffile

RNG = np.random.default_rng(20261122)


def samples(dtype, shape):
    """Random samples covering the full range of the type; floats include special values."""
    if dtype == "uint8":
        return RNG.integers(0, 256, size=shape, dtype=np.uint8)
    if dtype == "uint16":
        return RNG.integers(0, 65536, size=shape, dtype=np.uint16)
    a = RNG.normal(0.0, 1000.0, size=shape).astype(np.float32)
    flat = a.reshape(-1)
    special = [np.nan, np.inf, -np.inf, -0.0, 1e-45, np.finfo(np.float32).max, 0.1]
    n = min(len(special), flat.size)
    flat[:n] = np.array(special[:n], dtype=np.float32)
    return a


def to_czyx(array, axes):
    """Rearranges a tifffile series to (C, Z, Y, X): samples and channels are C; Q, I and Z
    (pages) are Z."""
    names = {"S": "C", "C": "C", "Q": "Z", "I": "Z", "Z": "Z", "Y": "Y", "X": "X"}
    mapped = [names[a] for a in axes]
    if len(set(mapped)) != len(mapped):
        raise ValueError(f"axes {axes} do not map to distinct C, Z, Y, X")
    for axis in "CZ":
        if axis not in mapped:
            array = array[np.newaxis]
            mapped.insert(0, axis)
    return np.ascontiguousarray(np.transpose(array, [mapped.index(a) for a in "CZYX"]))


def same(a, b):
    """Bitwise equality (NaN-safe)."""
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


class Writer:
    def __init__(self, out):
        self.out = out
        self.fixtures = []
        self.bad = []

    def add(self, name, czyx, spacing=None, **kwargs):
        """Writes czyx (the intended (C, Z, Y, X) volume) through tifffile with kwargs, checks
        that tifffile reads it back as written, and records the expectation."""
        data = kwargs.pop("data")
        path = self.out / f"{name}.tif"
        tifffile.imwrite(path, data, **kwargs)
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            read = series.asarray()
            axes = series.axes
        got = to_czyx(read, axes)
        if not same(got, czyx):
            raise SystemExit(f"{name}: tifffile does not read back what was written ({axes})")
        got.astype(got.dtype.newbyteorder("<")).tofile(self.out / f"{name}.raw")
        self.fixtures.append(
            {
                "name": name,
                "file": f"{name}.tif",
                "raw": f"{name}.raw",
                "dtype": str(czyx.dtype),
                "shape": list(czyx.shape),
                "spacing": spacing,
                "tifffile_axes": axes,
            }
        )

    def add_bad(self, name, expect, writer):
        path = self.out / f"{name}.tif"
        writer(path)
        self.bad.append({"name": name, "file": f"{name}.tif", "expect": expect})


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    w = Writer(out)

    # Plain multi-page stacks: every sample type × compression × classic/BigTIFF, odd sizes,
    # several strips per page with a short last strip.
    for dtype in ["uint8", "uint16", "float32"]:
        for compression in [None, "lzw", "zlib", "packbits"]:
            for bigtiff in [False, True]:
                zyx = samples(dtype, (5, 33, 47))
                name = f"stack_{dtype}_{compression or 'none'}_{'big' if bigtiff else 'classic'}"
                w.add(
                    name,
                    zyx[np.newaxis],
                    data=zyx,
                    compression=compression,
                    bigtiff=bigtiff,
                    rowsperstrip=8,
                    photometric="minisblack",
                )

    # Predictors: horizontal differencing for integers, floating-point for float32.
    for dtype, compression in [("uint8", "zlib"), ("uint16", "lzw"), ("float32", "zlib"),
                               ("float32", "lzw")]:
        zyx = samples(dtype, (3, 19, 23))
        w.add(f"predictor_{dtype}_{compression}", zyx[np.newaxis], data=zyx,
              compression=compression, predictor=True, photometric="minisblack")

    # ImageJ hyperstacks (pages channel-fastest): spacing from resolution + spacing= + unit=.
    czyx = samples("uint16", (3, 4, 20, 30))
    w.add("imagej_u16_c3_um", czyx, spacing=[2.5, 0.25, 0.125],
          data=np.transpose(czyx, (1, 0, 2, 3)), imagej=True, resolution=(8.0, 4.0),
          metadata={"axes": "ZCYX", "spacing": 2.5, "unit": "um"})
    czyx = samples("float32", (2, 5, 17, 13))
    w.add("imagej_f32_c2_nm", czyx, spacing=[0.3, 0.1, 0.2],
          data=np.transpose(czyx, (1, 0, 2, 3)), imagej=True, resolution=(5e-3, 1e-2),
          metadata={"axes": "ZCYX", "spacing": 300.0, "unit": "nm"})
    czyx = samples("uint8", (2, 3, 11, 9))
    w.add("imagej_u8_c2_escaped_micro", czyx, spacing=[1.5, 0.5, 0.5],
          data=np.transpose(czyx, (1, 0, 2, 3)), imagej=True, resolution=(2.0, 2.0),
          metadata={"axes": "ZCYX", "spacing": 1.5, "unit": "\\u00B5m"})
    czyx = samples("uint16", (2, 6, 21, 19))
    w.add("imagej_u16_c2_lzw", czyx, spacing=[1.0, 0.5, 0.5],
          data=np.transpose(czyx, (1, 0, 2, 3)), imagej=True, resolution=(2.0, 2.0),
          compression="lzw", metadata={"axes": "ZCYX", "spacing": 1.0, "unit": "micron"})
    czyx = samples("uint16", (1, 7, 16, 16))
    w.add("imagej_u16_zstack_no_spacing", czyx, data=czyx[0], imagej=True,
          metadata={"axes": "ZYX"})
    czyx = samples("uint16", (1, 7, 16, 16))
    w.add("imagej_u16_unit_inch", czyx, data=czyx[0], imagej=True, resolution=(2.0, 2.0),
          metadata={"axes": "ZYX", "spacing": 1.0, "unit": "inch"})
    czyx = samples("float32", (3, 1, 12, 10))
    w.add("imagej_f32_channels_only", czyx, data=czyx[:, 0], imagej=True,
          metadata={"axes": "CYX"})
    czyx = samples("uint16", (2, 6, 15, 14))
    w.add("imagej_u16_contiguous_one_ifd", czyx, data=np.transpose(czyx, (1, 0, 2, 3)),
          imagej=True, truncate=True, metadata={"axes": "ZCYX"})
    czyx = samples("float32", (2, 3, 9, 8))
    w.add("imagej_f32_big_endian", czyx, spacing=[4.0, 0.5, 0.25],
          data=np.transpose(czyx, (1, 0, 2, 3)), imagej=True, byteorder=">",
          resolution=(4.0, 2.0), metadata={"axes": "ZCYX", "spacing": 4.0, "unit": "um"})
    czyx = samples("uint16", (2, 4, 10, 12))
    w.add("imagej_u16_big_endian_contiguous", czyx, data=np.transpose(czyx, (1, 0, 2, 3)),
          imagej=True, byteorder=">", truncate=True, metadata={"axes": "ZCYX"})

    # RGB chunky stacks (one RGB page per z-slice: R = Golgi, G = nuclei in the published data).
    zyxs = samples("uint8", (5, 25, 31, 3))
    w.add("rgb_u8_stack", np.moveaxis(zyxs, 3, 0), data=zyxs, photometric="rgb")
    zyxs = samples("uint8", (4, 13, 17, 3))
    w.add("rgb_u8_imagej", np.moveaxis(zyxs, 3, 0), data=zyxs, photometric="rgb", imagej=True,
          metadata={"axes": "ZYXS"})
    zyxs = samples("uint16", (3, 21, 11, 3))
    w.add("rgb_u16_deflate_predictor", np.moveaxis(zyxs, 3, 0), data=zyxs, photometric="rgb",
          compression="zlib", predictor=True, rowsperstrip=4)
    zyxs = samples("uint8", (3, 9, 7, 4))
    w.add("rgba_u8_stack", np.moveaxis(zyxs, 3, 0), data=zyxs, photometric="rgb",
          extrasamples=["unassalpha"])

    # Planar multi-sample pages.
    zcyx = samples("float32", (3, 2, 14, 15))
    w.add("planar_f32_minisblack", np.transpose(zcyx, (1, 0, 2, 3)), data=zcyx,
          photometric="minisblack", planarconfig="separate")
    zcyx = samples("uint8", (4, 3, 10, 12))
    w.add("planar_u8_rgb_lzw", np.transpose(zcyx, (1, 0, 2, 3)), data=zcyx, photometric="rgb",
          planarconfig="separate", compression="lzw", rowsperstrip=3)
    zcyx = samples("uint16", (2, 5, 9, 9))
    w.add("planar_u16_5samples_packbits", np.transpose(zcyx, (1, 0, 2, 3)), data=zcyx,
          photometric="minisblack", planarconfig="separate", compression="packbits")

    # Tiles (partial at the right and bottom edges).
    zyx = samples("uint16", (3, 33, 47))
    w.add("tiled_u16_deflate", zyx[np.newaxis], data=zyx, tile=(16, 16), compression="zlib",
          photometric="minisblack")
    zyx = samples("float32", (2, 20, 40))
    w.add("tiled_f32_none", zyx[np.newaxis], data=zyx, tile=(16, 32), photometric="minisblack")

    # Single pages, a one-pixel image, big-endian plain files.
    yx = samples("uint16", (37, 29))
    w.add("single_page_u16", yx[np.newaxis, np.newaxis], data=yx, photometric="minisblack")
    yxs = samples("uint8", (6, 5, 3))
    w.add("single_page_rgb", np.moveaxis(yxs, 2, 0)[:, np.newaxis], data=yxs, photometric="rgb")
    yx = samples("float32", (1, 1))
    w.add("one_pixel_f32", yx[np.newaxis, np.newaxis], data=yx, photometric="minisblack")
    zyx = samples("uint16", (4, 6, 7))
    w.add("big_endian_u16_lzw", zyx[np.newaxis], data=zyx, byteorder=">", compression="lzw",
          photometric="minisblack")

    # Invalid input: each must give one error line naming the file and this problem.
    w.add_bad("bad_tiled_jpeg", "compression JPEG",
              lambda p: tifffile.imwrite(p, RNG.integers(0, 255, (32, 32), dtype=np.uint8),
                                         tile=(16, 16), compression="jpeg"))
    w.add_bad("bad_palette", "photometric interpretation palette",
              lambda p: tifffile.imwrite(p, np.zeros((8, 8), np.uint8), photometric="palette",
                                         colormap=np.zeros((3, 256), np.uint16)))

    def different_sizes(p):
        with tifffile.TiffWriter(p) as t:
            t.write(np.zeros((4, 5), np.uint8), photometric="minisblack")
            t.write(np.zeros((4, 6), np.uint8), photometric="minisblack")

    w.add_bad("bad_page_sizes", "pages of different sizes", different_sizes)

    def different_types(p):
        with tifffile.TiffWriter(p) as t:
            t.write(np.zeros((4, 5), np.uint8), photometric="minisblack")
            t.write(np.zeros((4, 5), np.uint16), photometric="minisblack")

    w.add_bad("bad_page_types", "pages of different sample types", different_types)
    w.add_bad("bad_time_series", "frames=2: time series are not supported",
              lambda p: tifffile.imwrite(p, np.zeros((2, 3, 4, 5), np.uint8), imagej=True,
                                         metadata={"axes": "TZYX"}))
    w.add_bad("bad_int16", "sample type int16 is not supported",
              lambda p: tifffile.imwrite(p, np.zeros((2, 4, 5), np.int16),
                                         photometric="minisblack"))
    w.add_bad("bad_float64", "sample type float64 is not supported",
              lambda p: tifffile.imwrite(p, np.zeros((2, 4, 5), np.float64),
                                         photometric="minisblack"))
    w.add_bad("bad_imagej_images", "ImageJ images=10 but the file has only 3 pages",
              lambda p: tifffile.imwrite(p, np.zeros((3, 4, 5), np.uint8),
                                         photometric="minisblack", metadata=None,
                                         description="ImageJ=1.11a\nimages=10\n"))
    w.add_bad("bad_imagej_value", "channels=\"two\"",
              lambda p: tifffile.imwrite(p, np.zeros((2, 4, 5), np.uint8),
                                         photometric="minisblack", metadata=None,
                                         description="ImageJ=1.11a\nimages=2\nchannels=two\n"))
    w.add_bad("bad_min_is_white", "MinIsWhite",
              lambda p: tifffile.imwrite(p, np.zeros((2, 4, 5), np.uint8),
                                         photometric="miniswhite"))
    w.add_bad("bad_zstd", "compression Zstandard",
              lambda p: tifffile.imwrite(p, np.zeros((2, 4, 5), np.uint8), compression="zstd",
                                         photometric="minisblack"))

    manifest = {"fixtures": w.fixtures, "bad": w.bad}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(w.fixtures)} fixtures and {len(w.bad)} invalid files in {out}")


if __name__ == "__main__":
    main()
