"""Writes the COCO evaluation fixtures under tests/fixtures/coco/ and pycocotools' numbers for them.

Run from the repository root: `/work/ref/bin/python tests/reference/make_coco_eval_fixtures.py`.

Files written:
- gt.json: 5 images of different non-square sizes, 4 categories (ids 1, 2, 3, 7), polygon masks
  (some with two parts), objects in the small/medium/large area ranges, crowd regions as
  uncompressed RLE (as in COCO's own annotations), one image without annotations.
- dt_bbox.json: box results (jittered true positives, duplicates, false positives, detections
  on crowd regions, detections of a category absent from the image, an image without
  detections, a detection on the image without annotations).
- dt_segm.json: the same detections with compressed-RLE masks and their boxes kept (mmdet 2.11,
  as mmdetection 2.11 writes them: pycocotools then takes the detection's area from the box).
- dt_segm_nobbox.json: the same masks without `bbox` (area from the mask).
- dt_empty.json: an empty results list (pycocotools' loadRes cannot take it; nextdet gives 0/-1).
- expected.json: pycocotools' 12 stats and mmdet-style per-category AP for each results file.
"""

import copy
import io
import json
import os
from contextlib import redirect_stdout

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

OUT = os.path.join("tests", "fixtures", "coco")
rng = np.random.RandomState(20261128)

IMAGES = [(1, 640, 427), (2, 333, 500), (3, 512, 288), (4, 257, 193), (5, 400, 300)]
CATS = [(1, "circle"), (2, "square"), (3, "triangle"), (7, "star")]


def polygon(kind, cx, cy, r):
    """A closed polygon (flat xy list) of the shape `kind` around (cx, cy) with radius r."""
    if kind == 1:
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        pts = np.stack([cx + r * np.cos(t), cy + 0.8 * r * np.sin(t)], 1)
    elif kind == 2:
        pts = np.array([[cx - r, cy - 0.7 * r], [cx + r, cy - 0.7 * r], [cx + r, cy + 0.7 * r], [cx - r, cy + 0.7 * r]])
    elif kind == 3:
        pts = np.array([[cx, cy - r], [cx + r, cy + r], [cx - r, cy + 0.9 * r]])
    else:
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        pts = np.stack([cx + rad * np.sin(t), cy - rad * np.cos(t)], 1)
    return [round(float(v), 2) for v in pts.reshape(-1)]


def clip_poly(poly, w, h):
    a = np.array(poly).reshape(-1, 2)
    a[:, 0] = np.clip(a[:, 0], 0, w - 1)
    a[:, 1] = np.clip(a[:, 1], 0, h - 1)
    return [round(float(v), 2) for v in a.reshape(-1)]


def main():
    images = [{"id": i, "width": w, "height": h, "file_name": f"{i:06d}.jpg"} for i, w, h in IMAGES]
    categories = [{"id": c, "name": n, "supercategory": "shape"} for c, n in CATS]
    anns = []
    # (image, category, cx, cy, radius): radii chosen so all three area ranges occur.
    objects = [
        (1, 1, 100, 100, 12), (1, 2, 300, 200, 40), (1, 3, 500, 300, 90), (1, 1, 560, 80, 6),
        (1, 7, 200, 330, 30), (1, 2, 420, 120, 14),
        (2, 1, 150, 250, 110), (2, 3, 60, 60, 10), (2, 2, 250, 420, 25),
        (3, 7, 256, 144, 60), (3, 3, 80, 200, 20), (3, 1, 430, 60, 8), (3, 2, 400, 220, 45),
        (4, 2, 128, 96, 50), (4, 1, 40, 40, 9),
    ]
    size = {i: (w, h) for i, w, h in IMAGES}
    for n, (img, cat, cx, cy, r) in enumerate(objects, start=1):
        w, h = size[img]
        seg = [clip_poly(polygon(cat, cx, cy, r), w, h)]
        if n % 5 == 0:  # a second part
            seg.append(clip_poly(polygon(2, cx + 1.6 * r, cy, 0.3 * r), w, h))
        rles = mask_utils.frPyObjects(seg, h, w)
        rle = mask_utils.merge(rles)
        area = float(mask_utils.area(rle))
        bbox = [round(float(v), 2) for v in mask_utils.toBbox(rle)]
        anns.append({"id": n, "image_id": img, "category_id": cat, "segmentation": seg,
                     "area": area, "bbox": bbox, "iscrowd": 0})
    # Crowd regions as uncompressed RLE.
    for img, cat, x0, y0, x1, y1 in [(1, 1, 20, 250, 160, 400), (3, 3, 150, 20, 300, 120)]:
        w, h = size[img]
        m = np.zeros((h, w), dtype=np.uint8, order="F")
        m[y0:y1, x0:x1] = 1
        m[y0 + 10:y0 + 30, x0 + 10:x0 + 40] = 0
        enc = mask_utils.encode(m)
        counts = []
        flat = m.flatten(order="F")
        cur, run = 0, 0
        for v in flat:
            if v != cur:
                counts.append(run)
                cur, run = v, 1
            else:
                run += 1
        counts.append(run)
        anns.append({"id": len(anns) + 1, "image_id": img, "category_id": cat,
                     "segmentation": {"size": [h, w], "counts": counts},
                     "area": float(mask_utils.area(enc)),
                     "bbox": [float(v) for v in mask_utils.toBbox(enc)], "iscrowd": 1})
    gt = {"images": images, "annotations": anns, "categories": categories}

    dets = []
    for a in anns:
        img = a["image_id"]
        if img == 4:
            continue  # image 4 has ground truth but no detections
        w, h = size[img]
        if a["iscrowd"]:
            x, y, bw, bh = a["bbox"]
            for _ in range(2):  # detections inside crowd regions are ignored, not false positives
                s = [x + rng.uniform(0, bw / 2), y + rng.uniform(0, bh / 2), bw / 3, bh / 3]
                dets.append((img, a["category_id"], s, rng.uniform(0.2, 0.9), None))
            continue
        seg = a["segmentation"]
        n_dup = 2 if a["id"] % 3 == 0 else 1
        for d in range(n_dup):
            jit = rng.uniform(-0.15, 0.15, 4) * np.array(a["bbox"][2:] * 2) * (1 + d)
            x, y, bw, bh = np.array(a["bbox"]) + jit
            shifted = [clip_poly((np.array(p).reshape(-1, 2) + jit[:2]).reshape(-1).tolist(), w, h) for p in seg]
            cat = a["category_id"]
            if a["id"] % 7 == 0:
                cat = 2 if cat != 2 else 1  # wrong class
            dets.append((img, cat, [x, y, max(bw, 1.0), max(bh, 1.0)], rng.uniform(0.05, 1.0), shifted))
    # False positives, including a category absent from the image and the image without annotations.
    for img, cat, cx, cy, r in [(1, 7, 600, 400, 15), (2, 7, 280, 80, 35), (3, 1, 30, 30, 70),
                                (5, 3, 200, 150, 50), (5, 2, 50, 50, 10), (2, 1, 150, 250, 60)]:
        w, h = size[img]
        poly = clip_poly(polygon(cat, cx, cy, r), w, h)
        rle = mask_utils.merge(mask_utils.frPyObjects([poly], h, w))
        box = [float(v) for v in mask_utils.toBbox(rle)]
        dets.append((img, cat, box, rng.uniform(0.05, 1.0), [poly]))

    bbox_res, segm_res = [], []
    for img, cat, box, score, seg in dets:
        w, h = size[img]
        box = [float(v) for v in box]
        bbox_res.append({"image_id": img, "category_id": cat, "bbox": box, "score": float(score)})
        if seg is None:
            x, y, bw, bh = box
            seg = [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        rle["counts"] = rle["counts"].decode("ascii")
        segm_res.append({"image_id": img, "category_id": cat, "bbox": box, "score": float(score),
                         "segmentation": rle})
    segm_nobbox = [{k: v for k, v in d.items() if k != "bbox"} for d in segm_res]

    os.makedirs(OUT, exist_ok=True)
    files = {"gt.json": gt, "dt_bbox.json": bbox_res, "dt_segm.json": segm_res,
             "dt_segm_nobbox.json": segm_nobbox, "dt_empty.json": []}
    for name, obj in files.items():
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(obj, f)

    expected = {}
    for name, iou_type in [("dt_bbox.json", "bbox"), ("dt_segm.json", "segm"),
                           ("dt_segm_nobbox.json", "segm")]:
        with redirect_stdout(io.StringIO()):
            coco_gt = COCO(os.path.join(OUT, "gt.json"))
            coco_dt = coco_gt.loadRes(os.path.join(OUT, name))
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        per_cat = []
        for k, cat_id in enumerate(ev.params.catIds):
            p = ev.eval["precision"][:, :, k, 0, -1]
            p = p[p > -1]
            per_cat.append({"id": int(cat_id), "name": coco_gt.cats[cat_id]["name"],
                            "ap": float(np.mean(p)) if p.size else -1.0})
        expected[name] = {"iou_type": iou_type, "stats": [float(s) for s in ev.stats],
                          "per_category": per_cat}
        print(name, iou_type, " ".join(f"{s:.4f}" for s in ev.stats))
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
