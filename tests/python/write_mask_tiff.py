"""Writes a raw uint8 mask as an ImageJ hyperstack TIFF with tifffile, for CLI tests.

  write_mask_tiff.py RAW C,Z,Y,X OUT.tif [Z_UM,Y_UM,X_UM]

RAW holds C·Z·Y·X bytes in (C, Z, Y, X) order; non-zero voxels are written as 255. With a
spacing, the file carries it as ImageJ metadata (spacing= for z, the resolution tags for y
and x, unit=um), the way ImageJ and tifffile users save calibrated stacks.
"""

import sys

import numpy as np
import tifffile


def main():
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    shape = tuple(int(v) for v in sys.argv[2].split(","))
    mask = np.fromfile(sys.argv[1], dtype=np.uint8).reshape(shape)
    data = np.where(mask != 0, 255, 0).astype(np.uint8).transpose(1, 0, 2, 3)  # Z, C, Y, X
    kwargs = {}
    metadata = {"axes": "ZCYX"}
    if len(sys.argv) == 5:
        z, y, x = (float(v) for v in sys.argv[4].split(","))
        kwargs["resolution"] = (1.0 / x, 1.0 / y)
        metadata.update({"spacing": z, "unit": "um"})
    tifffile.imwrite(sys.argv[3], data, imagej=True, metadata=metadata, **kwargs)


if __name__ == "__main__":
    main()
