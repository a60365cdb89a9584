"""Writes the fixtures of the in-memory COCO evaluator (evaluation/tests/evaluator.rs) under
tests/fixtures/coco_evaluator/, with pycocotools' numbers computed the way mmdetection 2.11's
`CocoDataset` does (mmdet/datasets/coco.py of mmdetection 2.11).

Run from the repository root: `/work/ref/bin/python tests/reference/make_coco_evaluator_fixtures.py`.

Files written:
- gt.json: 6 small non-square images; categories listed out of id order, one (id 9) without any
  ground truth; polygon masks (some in two parts), non-crowd masks given as compressed RLE,
  crowd regions as uncompressed RLE; objects in the small, medium and large area ranges; image 5
  has no annotations.
- detections.json: what the detector hands the evaluator, one record per image as nextdet's
  `Detections` (image_id, boxes xyxy float32, scores float32, contiguous labels into the sorted
  category ids, masks as uncompressed column-major RLE). Image 1 has 110 squares so that
  pycocotools' 100- and 1000-detection limits (per image and category) differ; image 4 has ground truth and is never
  added; image 6 is added with no detections; there are detections of category 9 (no ground
  truth anywhere), of categories absent from their image, on crowd regions and on image 5.
- expected.json: the mmdetection results lists (`_segm2json`: bbox [x1, y1, x2-x1, y2-y1] from
  the float32 box, score float, category_id, segm keeping the bbox, counts from pycocotools'
  `mask.encode`), and for bbox and segm pycocotools' 12 stats and mmdetection's classwise AP
  (precision[:, :, k, 0, -1]; -1 instead of nan) with catIds, imgIds, maxDets=[100, 300, 1000]
  and iouThrs set as mmdetection sets them.
- rle.json: masks with their uncompressed runs, pycocotools' compressed string and area
  (long runs, masks starting with 1, full and empty masks).
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

OUT = os.path.join("tests", "fixtures", "coco_evaluator")
rng = np.random.RandomState(1128)

# (id, width, height)
IMAGES = [(1, 160, 120), (2, 97, 131), (3, 200, 90), (4, 64, 80), (5, 120, 100), (6, 50, 40)]
# Listed out of id order on purpose: labels follow the sorted ids.
CATS = [(7, "star"), (1, "circle"), (3, "triangle"), (9, "hexagon"), (2, "square")]


def runs(mask):
    """Uncompressed COCO runs of a (h, w) 0/1 mask: column-major, starting with zeros."""
    flat = np.asarray(mask, dtype=np.uint8).flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            cur, run = v, 0
        run += 1
    counts.append(run)
    return counts


def encode(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return rle["counts"].decode("ascii")


def polygon(kind, cx, cy, r):
    """A polygon (flat xy list) of shape `kind` around (cx, cy) with radius r."""
    if kind == 1:
        t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        pts = np.stack([cx + r * np.cos(t), cy + 0.8 * r * np.sin(t)], 1)
    elif kind == 2:
        pts = np.array([[cx - r, cy - 0.7 * r], [cx + r, cy - 0.7 * r], [cx + r, cy + 0.7 * r], [cx - r, cy + 0.7 * r]])
    elif kind == 3:
        pts = np.array([[cx, cy - r], [cx + r, cy + r], [cx - r, cy + 0.9 * r]])
    else:
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
        pts = np.stack([cx + rad * np.sin(t), cy - rad * np.cos(t)], 1)
    return pts


def clip(pts, w, h):
    pts = np.array(pts, dtype=np.float64).reshape(-1, 2)
    pts[:, 0] = np.clip(pts[:, 0], 0, w - 1)
    pts[:, 1] = np.clip(pts[:, 1], 0, h - 1)
    return [round(float(v), 2) for v in pts.reshape(-1)]


def rasterize(polys, h, w):
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polys, h, w)))


def make_gt():
    size = {i: (w, h) for i, w, h in IMAGES}
    anns = []
    # (image, category, cx, cy, r, format): all three area ranges occur.
    objects = [
        (1, 1, 30, 30, 8, "poly"), (1, 2, 90, 60, 35, "poly"), (1, 3, 140, 95, 12, "rle"),
        (1, 7, 40, 90, 15, "poly"), (1, 2, 130, 25, 6, "poly"),
        (2, 1, 48, 70, 40, "rle"), (2, 3, 20, 20, 8, "poly"), (2, 2, 70, 115, 10, "poly"),
        (3, 2, 100, 45, 62, "poly"), (3, 7, 160, 70, 12, "poly"), (3, 3, 25, 60, 14, "poly"), (3, 1, 180, 20, 7, "rle"),
        (4, 2, 32, 40, 20, "poly"), (4, 1, 12, 12, 5, "poly"),
        (6, 3, 25, 20, 12, "poly"),
    ]
    for n, (img, cat, cx, cy, r, fmt) in enumerate(objects, start=1):
        w, h = size[img]
        polys = [clip(polygon(cat, cx, cy, r), w, h)]
        if n % 4 == 0:  # a second part
            polys.append(clip(polygon(2, cx + 1.5 * r, cy, 0.3 * r), w, h))
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, h, w))
        seg = polys
        if fmt == "rle":
            seg = {"size": [h, w], "counts": rle["counts"].decode("ascii")}
        anns.append({"id": n, "image_id": img, "category_id": cat, "segmentation": seg,
                     "area": float(mask_utils.area(rle)),
                     "bbox": [round(float(v), 2) for v in mask_utils.toBbox(rle)], "iscrowd": 0})
    for img, cat, x0, y0, x1, y1 in [(1, 1, 100, 80, 150, 118), (3, 3, 130, 5, 195, 40)]:
        w, h = size[img]
        m = np.zeros((h, w), dtype=np.uint8)
        m[y0:y1, x0:x1] = 1
        m[y0 + 3:y0 + 9, x0 + 4:x0 + 15] = 0
        enc = mask_utils.encode(np.asfortranarray(m))
        anns.append({"id": len(anns) + 1, "image_id": img, "category_id": cat,
                     "segmentation": {"size": [h, w], "counts": runs(m)},
                     "area": float(mask_utils.area(enc)),
                     "bbox": [float(v) for v in mask_utils.toBbox(enc)], "iscrowd": 1})
    images = [{"id": i, "width": w, "height": h, "file_name": f"{i:06d}.jpg"} for i, w, h in IMAGES]
    categories = [{"id": c, "name": n, "supercategory": "shape"} for c, n in CATS]
    return {"images": images, "annotations": anns, "categories": categories}


def make_detections(gt):
    """Per image: list of (cat_id, xyxy float32, score float32, mask (h, w))."""
    size = {i: (w, h) for i, w, h in IMAGES}
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with redirect_stdout(io.StringIO()):
        coco.createIndex()
    per_image = {i: [] for i, _, _ in IMAGES}

    def add(img, cat, box, mask, score=None):
        score = np.float32(rng.uniform(0.02, 1.0) if score is None else score)
        per_image[img].append((cat, np.array(box, dtype=np.float32), score, mask))

    for a in gt["annotations"]:
        img = a["image_id"]
        if img == 4:
            continue  # ground truth but never added
        w, h = size[img]
        x, y, bw, bh = a["bbox"]
        if a["iscrowd"]:
            for _ in range(2):  # inside a crowd region: ignored, not a false positive
                x0, y0 = x + rng.uniform(0, bw / 2), y + rng.uniform(0, bh / 2)
                box = [x0, y0, x0 + bw / 3, y0 + bh / 3]
                m = np.zeros((h, w), dtype=np.uint8)
                m[int(y0):int(y0 + bh / 3), int(x0):int(x0 + bw / 3)] = 1
                add(img, a["category_id"], box, m)
            continue
        gt_mask = coco.annToMask(a)
        for d in range(2 if a["id"] % 3 == 0 else 1):
            dx, dy = rng.randint(-3, 4, 2) * (1 + d)
            m = np.roll(np.roll(gt_mask, dy, 0), dx, 1)
            jit = rng.uniform(-0.12, 0.12, 4) * np.array([bw, bh, bw, bh]) * (1 + d)
            box = np.array([x, y, x + bw, y + bh]) + jit + np.array([dx, dy, dx, dy])
            cat = a["category_id"]
            if a["id"] % 7 == 0:
                cat = 2 if cat != 2 else 1  # wrong class
            # Annotation 2's match scores last on image 1 (rank 110 among its squares): found with maxDets 1000
            # (AP50, APm) but not with 100 (AP).
            add(img, cat, box, m, 0.005 if a["id"] == 2 and d == 0 else None)
    # False positives: category 9 (no ground truth), categories absent from the image, image 5.
    for img, cat, cx, cy, r in [(1, 9, 120, 40, 10), (2, 7, 60, 30, 12), (3, 1, 60, 20, 9),
                                (5, 3, 60, 50, 25), (5, 2, 20, 20, 6), (5, 9, 90, 70, 8), (2, 9, 30, 100, 5)]:
        w, h = size[img]
        poly = clip(polygon(cat if cat != 9 else 1, cx, cy, r), w, h)
        m = rasterize([poly], h, w)
        bx = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m)))
        add(img, cat, [bx[0], bx[1], bx[0] + bx[2], bx[1] + bx[3]], m)
    # Low-confidence squares on image 1 so it has 110 of them: pycocotools caps detections per image
    # and category.
    w, h = size[1]
    while sum(d[0] == 2 for d in per_image[1]) < 110:
        bw, bh = rng.uniform(4, 40, 2)
        x0, y0 = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
        m = np.zeros((h, w), dtype=np.uint8)
        m[int(y0):int(y0 + bh), int(x0):int(x0 + bw)] = 1
        cat = 2
        per_image[1].append((cat, np.array([x0, y0, x0 + bw, y0 + bh], dtype=np.float32),
                             np.float32(rng.uniform(0.01, 0.6)), m))
    # Detector output order: by descending score over all classes, as mmdet's NMS returns them.
    for img in per_image:
        per_image[img].sort(key=lambda d: -float(d[2]))
    return per_image


def mmdet_results(per_image, cat_ids, image_order):
    """mmdetection 2.11 `_segm2json`: per image, per label (ascending), detector order inside."""
    bbox_res, segm_res = [], []
    for img in image_order:
        dets = per_image.get(img)
        if dets is None:
            continue
        for label, cat in enumerate(cat_ids):
            for c, box, score, m in dets:
                if c != cat:
                    continue
                b = box.tolist()
                xywh = [b[0], b[1], b[2] - b[0], b[3] - b[1]]
                bbox_res.append({"image_id": img, "bbox": xywh, "score": float(score), "category_id": cat})
                h, w = m.shape
                segm_res.append({"image_id": img, "bbox": xywh, "score": float(score), "category_id": cat,
                                 "segmentation": {"size": [h, w], "counts": encode(m)}})
    return bbox_res, segm_res


def mmdet_eval(gt_file, results, iou_type, cat_ids, img_ids):
    with redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_file)
        coco_dt = coco_gt.loadRes(copy.deepcopy(results))
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.params.catIds = cat_ids
        ev.params.imgIds = img_ids
        ev.params.maxDets = [100, 300, 1000]
        ev.params.iouThrs = np.linspace(.5, 0.95, int(np.round((0.95 - .5) / .05)) + 1, endpoint=True)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    per_cat = []
    for k, cat_id in enumerate(ev.params.catIds):  # sorted by evaluate()
        p = ev.eval["precision"][:, :, k, 0, -1]
        p = p[p > -1]
        per_cat.append({"id": int(cat_id), "name": coco_gt.cats[cat_id]["name"],
                        "ap": float(np.mean(p)) if p.size else -1.0})
    return {"stats": [float(s) for s in ev.stats], "per_category": per_cat}


def rle_cases():
    cases = []
    m = np.zeros((300, 301), dtype=np.uint8)  # long runs (multi-character, negative deltas)
    m[250:, 290:] = 1
    m[0, 0] = 1
    m[10:200, 5:7] = 1
    cases.append(m)
    m = np.ones((7, 5), dtype=np.uint8)  # starts with 1, full
    cases.append(m)
    cases.append(np.zeros((4, 9), dtype=np.uint8))  # empty
    m = (rng.uniform(size=(23, 17)) > 0.6).astype(np.uint8)  # many short runs
    cases.append(m)
    m = np.zeros((40, 3000), dtype=np.uint8)  # a run of 40*2990 zeros
    m[:, 2990:] = 1
    m[5, 0] = 1
    cases.append(m)
    out = []
    for m in cases:
        enc = mask_utils.encode(np.asfortranarray(m))
        out.append({"height": int(m.shape[0]), "width": int(m.shape[1]), "counts": runs(m),
                    "string": enc["counts"].decode("ascii"), "area": int(mask_utils.area(enc)),
                    "row_major_ones": [int(i) for i in np.flatnonzero(m.reshape(-1))]})
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    gt = make_gt()
    gt_file = os.path.join(OUT, "gt.json")
    with open(gt_file, "w") as f:
        json.dump(gt, f)
    per_image = make_detections(gt)
    cat_ids = sorted(c for c, _ in CATS)  # label order (mmdet cat_ids for a sorted COCO file)
    image_order = [i for i, _, _ in IMAGES]

    added = {i: d for i, d in per_image.items() if i != 4}
    added[6] = []  # added, but no detections
    records = []
    for img in image_order:
        if img not in added:
            continue
        dets = added[img]
        records.append({
            "image_id": img,
            "boxes": [[float(v) for v in box] for _, box, _, _ in dets],
            "scores": [float(s) for _, _, s, _ in dets],
            "labels": [cat_ids.index(c) for c, _, _, _ in dets],
            "masks": [{"height": int(m.shape[0]), "width": int(m.shape[1]), "counts": runs(m)}
                      for _, _, _, m in dets],
        })
    with open(os.path.join(OUT, "detections.json"), "w") as f:
        json.dump(records, f)

    bbox_res, segm_res = mmdet_results(added, cat_ids, image_order)
    expected = {"cat_ids": cat_ids, "results": {"bbox": bbox_res, "segm": segm_res}}
    for iou_type, res in [("bbox", bbox_res), ("segm", segm_res)]:
        expected[iou_type] = mmdet_eval(gt_file, res, iou_type, cat_ids, image_order)
        print(iou_type, " ".join(f"{s:.4f}" for s in expected[iou_type]["stats"]))
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f)
    with open(os.path.join(OUT, "rle.json"), "w") as f:
        json.dump(rle_cases(), f)
    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)))


if __name__ == "__main__":
    main()
