"""Reference values for seglab's metrics, computed with NumPy, SciPy and scikit-image.

Used by tests/metrics_parity.rs. Two commands:

  metrics_reference.py convert MASK.tif OUT.raw
      Writes the mask's non-zero voxels as raw uint8 0/1 (Z, Y, X order, x fastest) and
      prints {"shape": [z, y, x]} on stdout, so the Rust test can read real masks as raw
      arrays.

  metrics_reference.py reference DIR
      Reads DIR/cases.json (written by the Rust test): a list of
      {"name", "shape": [z, y, x], "spacing": [z, y, x], "pred": file, "gt": file}
      with raw uint8 masks in DIR. Writes DIR/reference.json with, per case:
        voxel     tp, fp, fn, tn, dice (plain and +1-smoothed), iou, precision, recall,
                  specificity; NaN for a zero denominator, written as null
        labels    per connectivity (6, 18, 26) and mask: count, sizes; the label images
                  go to DIR/<name>_<pred|gt>_labels<k>.raw as int32
        edt       DIR/<name>_gt_edt.raw: distance_transform_edt(gt, sampling=spacing) as
                  float64 (only when gt has a background voxel)
        surface   hd95, assd (surface = mask minus its 6-connected erosion; pooled
                  95th percentile; mean of the directed means)
        objects   per connectivity and minimum size: n_pred, n_ref and the maximum number
                  of one-to-one matches by IoU >= 0.5 and by the 50 %-of-prediction rule
                  (scipy.optimize.linear_sum_assignment), with the IoU pairs

The definitions are written independently of the Rust code, from the conventions in
src/metrics/conventions.rs.
"""

import json
import math
import os
import sys

import numpy as np
import scipy.ndimage as ndi
import tifffile
from scipy.optimize import linear_sum_assignment
from skimage.morphology import remove_small_objects

CONNECTIVITIES = {6: 1, 18: 2, 26: 3}
MIN_SIZES = [1, 50]


def nan_to_none(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def ratio(num, den):
    return float(num) / float(den) if den != 0 else float("nan")


def voxel_metrics(p, g):
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    tn = int(np.count_nonzero(~p & ~g))
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "dice": ratio(2 * tp, 2 * tp + fp + fn),
        # The published code: (2 TP + 1) / (|GT| + |Pred| + 1).
        "dice_smoothed": (2 * tp + 1) / (g.sum() + p.sum() + 1),
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "specificity": ratio(tn, tn + fp),
    }


def surface(m):
    structure = ndi.generate_binary_structure(3, 1)
    return m & ~ndi.binary_erosion(m, structure=structure, border_value=0)


def surface_distances(p, g, spacing):
    if not p.any() or not g.any():
        return float("nan"), float("nan")
    sp, sg = surface(p), surface(g)
    d_pg = ndi.distance_transform_edt(~sg, sampling=spacing)[sp]
    d_gp = ndi.distance_transform_edt(~sp, sampling=spacing)[sg]
    hd95 = float(np.percentile(np.hstack([d_pg, d_gp]), 95))
    assd = float((d_pg.mean() + d_gp.mean()) / 2)
    return hd95, assd


def max_matching(candidates):
    """Largest one-to-one set of True entries of a (pred × ref) boolean matrix."""
    if candidates.size == 0:
        return []
    rows, cols = linear_sum_assignment(-candidates.astype(np.int64))
    return [(int(r), int(c)) for r, c in zip(rows, cols) if candidates[r, c]]


def objects(lp, lg, min_size, structure_rank):
    structure = ndi.generate_binary_structure(3, structure_rank)
    # Relabel after removing small objects, as the Rust side numbers the kept objects.
    # scikit-image >= 0.26: max_size removes objects of at most that many voxels.
    keep_p = remove_small_objects(lp, max_size=min_size - 1) if min_size > 1 else lp
    keep_g = remove_small_objects(lg, max_size=min_size - 1) if min_size > 1 else lg
    lp, n_p = ndi.label(keep_p > 0, structure=structure)
    lg, n_g = ndi.label(keep_g > 0, structure=structure)
    size_p = np.bincount(lp.ravel(), minlength=n_p + 1)
    size_g = np.bincount(lg.ravel(), minlength=n_g + 1)
    joint = np.zeros((n_p + 1, n_g + 1), dtype=np.int64)
    np.add.at(joint, (lp.ravel(), lg.ravel()), 1)
    inter = joint[1:, 1:]
    union = size_p[1:, None] + size_g[None, 1:] - inter
    iou_cand = (inter > 0) & (2 * inter >= union)
    overlap_cand = (inter > 0) & (2 * inter >= size_p[1:, None])
    iou_pairs = max_matching(iou_cand)
    return {
        "n_pred": int(n_p),
        "n_ref": int(n_g),
        "tp_iou": len(iou_pairs),
        "iou_pairs": sorted([p + 1, g + 1] for p, g in iou_pairs),
        "tp_overlap50": len(max_matching(overlap_cand)),
    }


def read_raw(path, shape):
    return np.fromfile(path, dtype=np.uint8).reshape(shape) != 0


def reference(folder):
    with open(os.path.join(folder, "cases.json")) as f:
        cases = json.load(f)
    out = {}
    for case in cases:
        name, shape = case["name"], tuple(case["shape"])
        spacing = tuple(case["spacing"])
        p = read_raw(os.path.join(folder, case["pred"]), shape)
        g = read_raw(os.path.join(folder, case["gt"]), shape)
        res = {"voxel": voxel_metrics(p, g), "labels": {}, "objects": {}}
        for k, rank in CONNECTIVITIES.items():
            structure = ndi.generate_binary_structure(3, rank)
            entry = {}
            for which, m in (("pred", p), ("gt", g)):
                lab, n = ndi.label(m, structure=structure)
                lab.astype(np.int32).tofile(
                    os.path.join(folder, f"{name}_{which}_labels{k}.raw")
                )
                entry[which] = {
                    "count": int(n),
                    "sizes": np.bincount(lab.ravel())[1:].tolist(),
                }
                if which == "pred":
                    lp = lab
                else:
                    lg = lab
            res["labels"][str(k)] = entry
            res["objects"][str(k)] = {
                str(ms): objects(lp, lg, ms, rank) for ms in MIN_SIZES
            }
        if (~g).any():
            edt = ndi.distance_transform_edt(g, sampling=spacing)
            edt.astype(np.float64).tofile(os.path.join(folder, f"{name}_gt_edt.raw"))
            res["edt"] = f"{name}_gt_edt.raw"
        hd95, assd = surface_distances(p, g, spacing)
        res["surface"] = {"hd95": hd95, "assd": assd}
        out[name] = res

    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        if isinstance(v, (np.floating, np.integer)):
            v = v.item()
        return nan_to_none(v)

    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(clean(out), f)


def convert(src, dst):
    mask = tifffile.imread(src)
    if mask.ndim != 3:
        sys.exit(f"{src}: expected a single-channel z-stack, got shape {mask.shape}")
    (mask != 0).astype(np.uint8).tofile(dst)
    print(json.dumps({"shape": list(mask.shape)}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "convert":
        convert(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "reference":
        reference(sys.argv[2])
    else:
        sys.exit(__doc__)
