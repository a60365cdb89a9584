"""Times pycocotools against `nextdet coco-eval` on a generated COCO-sized evaluation.

Run from the repository root after `cargo build --release --bin nextdet`:

    /work/ref/bin/python tests/reference/bench_coco_eval.py [--images 5000] [--dets 100] [--segm]

It writes into a temporary directory (deleted afterwards, nothing is committed):
- gt.json: `--images` small images (160..320 x 120..240 pixels) with 2..8 objects each in 20
  categories, polygon masks (areas over the small/medium/large ranges), a few crowd regions;
- dt_bbox.json: `--dets` detections per image (jittered ground truth and duplicates scored in
  0.3..1, false positives in 0..0.7);
- dt_segm.json (with `--segm`): the same detections with compressed-RLE masks (shifted
  ground-truth polygons for matches, rectangles otherwise), boxes kept as mmdetection 2.11 does.

For each IoU type it times pycocotools (COCO(gt) load, loadRes, evaluate, accumulate,
summarize, each step and the total) and then the `nextdet coco-eval` process (wall clock, and the
time the tool reports for itself), checks the 12 stats agree within 1e-9, and prints the times
and their ratio.
"""

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import redirect_stdout

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

NUM_CATS = 20


def shape(kind, cx, cy, r):
    """A closed polygon (n, 2) of `kind` around (cx, cy) with radius r."""
    if kind % 3 == 0:
        t = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        return np.stack([cx + r * np.cos(t), cy + 0.8 * r * np.sin(t)], 1)
    if kind % 3 == 1:
        return np.array([[cx - r, cy - 0.7 * r], [cx + r, cy - 0.7 * r], [cx + r, cy + 0.7 * r], [cx - r, cy + 0.7 * r]])
    return np.array([[cx, cy - r], [cx + r, cy + r], [cx - r, cy + 0.9 * r]])


def generate(out_dir, n_images, n_dets, with_segm, seed=0):
    rng = np.random.RandomState(seed)
    images, anns = [], []
    objects = {}  # image id -> list of (cat, polygon (n, 2), bbox)
    for img in range(1, n_images + 1):
        w, h = int(rng.randint(160, 321)), int(rng.randint(120, 241))
        images.append({"id": img, "width": w, "height": h, "file_name": f"{img:012d}.jpg"})
        objs = []
        for _ in range(rng.randint(2, 9)):
            cat = int(rng.randint(1, NUM_CATS + 1))
            r = float(np.exp(rng.uniform(np.log(3), np.log(min(w, h) / 2.2))))
            cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
            pts = shape(cat, cx, cy, r)
            pts[:, 0] = np.clip(pts[:, 0], 0, w - 1)
            pts[:, 1] = np.clip(pts[:, 1], 0, h - 1)
            poly = [round(float(v), 2) for v in pts.reshape(-1)]
            rle = mask_utils.frPyObjects([poly], h, w)[0]
            area = float(mask_utils.area(rle))
            if area < 1:
                continue
            bbox = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
            crowd = int(rng.uniform() < 0.02)
            anns.append({"id": len(anns) + 1, "image_id": img, "category_id": cat, "segmentation": [poly],
                         "area": area, "bbox": bbox, "iscrowd": crowd})
            objs.append((cat, pts, bbox))
        objects[img] = objs
    cats = [{"id": c, "name": f"class{c}", "supercategory": "shape"} for c in range(1, NUM_CATS + 1)]
    with open(os.path.join(out_dir, "gt.json"), "w") as f:
        json.dump({"images": images, "annotations": anns, "categories": cats}, f)

    bbox_res, segm_res = [], []
    for im in images:
        img, w, h = im["id"], im["width"], im["height"]
        dets = []  # (cat, bbox xywh, polygon or None)
        for cat, pts, (x, y, bw, bh) in objects[img]:
            for d in range(rng.randint(1, 3)):
                jit = rng.uniform(-0.15, 0.15, 2) * np.array([bw, bh]) * (1 + d)
                c = cat if rng.uniform() > 0.1 else int(rng.randint(1, NUM_CATS + 1))
                dets.append((c, [x + jit[0], y + jit[1], bw, bh], pts + jit, rng.uniform(0.3, 1.0)))
        while len(dets) < n_dets:
            bw, bh = rng.uniform(3, w / 2), rng.uniform(3, h / 2)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            dets.append((int(rng.randint(1, NUM_CATS + 1)), [x, y, bw, bh], None, rng.uniform(0.0, 0.7)))
        dets = dets[:n_dets]
        polys = []
        for c, b, pts, s in dets:
            b = [round(float(v), 2) for v in b]
            bbox_res.append({"image_id": img, "category_id": c, "bbox": b, "score": round(float(s), 4)})
            if pts is None:
                x, y, bw, bh = b
                pts = np.array([[x, y], [x + bw, y], [x + bw, y + bh], [x, y + bh]])
            polys.append([float(v) for v in pts.reshape(-1)])
        if with_segm:
            for r, res in zip(mask_utils.frPyObjects(polys, h, w), bbox_res[-len(dets):]):
                seg = {"size": [h, w], "counts": r["counts"].decode("ascii")}
                segm_res.append(dict(res, segmentation=seg))
    with open(os.path.join(out_dir, "dt_bbox.json"), "w") as f:
        json.dump(bbox_res, f)
    if with_segm:
        with open(os.path.join(out_dir, "dt_segm.json"), "w") as f:
            json.dump(segm_res, f)
    return len(anns), len(bbox_res)


def time_pycocotools(gt, dt, iou_type):
    times = {}
    with redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        coco_gt = COCO(gt)
        times["load gt"] = time.perf_counter() - t0
        t = time.perf_counter()
        coco_dt = coco_gt.loadRes(dt)
        times["loadRes"] = time.perf_counter() - t
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        for step in ("evaluate", "accumulate", "summarize"):
            t = time.perf_counter()
            getattr(ev, step)()
            times[step] = time.perf_counter() - t
        times["total"] = time.perf_counter() - t0
    return times, [float(s) for s in ev.stats]


def time_nextdet(binary, gt, dt, iou_type):
    t0 = time.perf_counter()
    proc = subprocess.run([binary, "coco-eval", "--gt", gt, "--dt", dt, "--iou-type", iou_type, "--json"],
                          capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"nextdet coco-eval failed:\n{proc.stderr}")
    doc = json.loads(proc.stdout)
    return wall, doc["seconds"], doc["stats_list"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--dets", type=int, default=100, help="detections per image")
    ap.add_argument("--segm", action="store_true", help="also time mask evaluation")
    ap.add_argument("--binary", default=os.path.join("target", "release", "nextdet"))
    args = ap.parse_args()
    if not os.path.exists(args.binary):
        sys.exit(f"{args.binary} not found: run `cargo build --release --bin nextdet` first")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        n_gt, n_dt = generate(tmp, args.images, args.dets, args.segm)
        sizes = {n: os.path.getsize(os.path.join(tmp, n)) / 2**20 for n in sorted(os.listdir(tmp))}
        print(f"generated {args.images} images, {n_gt} annotations, {n_dt} detections in "
              f"{time.perf_counter() - t:.1f} s: " + ", ".join(f"{n} {s:.1f} MiB" for n, s in sizes.items()))
        gt = os.path.join(tmp, "gt.json")
        for iou_type in ["bbox"] + (["segm"] if args.segm else []):
            dt = os.path.join(tmp, f"dt_{iou_type}.json")
            py_times, py_stats = time_pycocotools(gt, dt, iou_type)
            wall, own, nd_stats = time_nextdet(args.binary, gt, dt, iou_type)
            diff = max(abs(a - b) for a, b in zip(py_stats, nd_stats))
            print(f"\n[{iou_type}] pycocotools: " + ", ".join(f"{k} {v:.2f} s" for k, v in py_times.items()))
            print(f"[{iou_type}] nextdet coco-eval: process wall {wall:.2f} s (self-reported {own:.2f} s)")
            print(f"[{iou_type}] speed-up: {py_times['total'] / wall:.1f}x (wall), "
                  f"{py_times['total'] / own:.1f}x (self-reported); max |stat difference| {diff:.1e}")
            print(f"[{iou_type}] AP {py_stats[0]:.4f} / {nd_stats[0]:.4f}")
            if diff > 1e-9:
                sys.exit(f"{iou_type}: stats differ: {py_stats} vs {nd_stats}")


if __name__ == "__main__":
    main()
