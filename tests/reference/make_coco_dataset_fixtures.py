"""COCO dataset loading reference for datasets/tests/coco.rs.

Writes a tiny COCO set to tests/fixtures/coco_dataset/: six small non-square PNGs (random
pixels), `instances.json` and `expected.json`. The annotations cover what mmdetection 2.11's
`CocoDataset._parse_ann_info` treats specially: polygons (several per object, partly outside
the image), uncompressed and compressed RLE, crowd, the `ignore` flag, a box outside the
image, a box touching the image edge, area 0, w < 1, an unknown category, an image with only a
crowd, one with only an unknown category, one without annotations and one under 32 px.
Categories are listed out of id order and images out of id order.

`expected.json` holds, for the evaluation options (nothing filtered) and the training options
(filter_empty_gt, min_size=32), each kept image's boxes, labels, crowd boxes and annotation ids,
computed by re-implementing mmdetection's `_parse_ann_info` / `_filter_imgs` over pycocotools'
`COCO` index, and each object's mask from pycocotools' `COCO.annToMask` (as row-major run
lengths starting with zeros). Labels are categories sorted by id (nextdet's rule; mmdetection
takes the order of its CLASSES, which for COCO is the same).

Rerun from the repository root: /path/to/ref/bin/python tests/reference/make_coco_dataset_fixtures.py
"""

import json
import os

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

OUT = "tests/fixtures/coco_dataset"


def ellipse(h, w, cx, cy, rx, ry):
    yy, xx = np.mgrid[0:h, 0:w]
    return (((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1.0).astype(np.uint8)


def uncompressed(mask):
    """COCO's uncompressed RLE: column-major run lengths starting with zeros."""
    flat = mask.flatten(order="F")
    counts, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            counts.append(run)
            run, cur = 0, v
        run += 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def compressed(mask):
    rle = mask_utils.encode(np.asfortranarray(mask))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rle_stats(segm, h, w):
    rle = mask_utils.frPyObjects(segm, h, w) if isinstance(segm["counts"], list) else segm
    if isinstance(rle["counts"], str):
        rle = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return float(mask_utils.area(rle)), [float(v) for v in mask_utils.toBbox(rle)]


def build():
    rng = np.random.default_rng(0)
    # (id, file, width, height), in file order (not id order).
    images = [(11, "a.png", 64, 48), (5, "b.png", 40, 56), (20, "c.png", 72, 30),
              (3, "d.png", 48, 36), (8, "e.png", 50, 40), (9, "f.png", 44, 44)]
    categories = [{"id": 7, "name": "star"}, {"id": 1, "name": "circle"}, {"id": 3, "name": "triangle"}]
    anns = []

    def add(ann_id, image_id, cat, bbox, area, segm, **extra):
        a = {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox, "area": area,
             "iscrowd": 0, "segmentation": segm}
        a.update(extra)
        anns.append(a)

    # Image 11 (64x48).
    add(101, 11, 1, [4.5, 3.25, 30.0, 20.5], 380.0,
        [[4.5, 3.25, 34.5, 5.0, 20.0, 23.75], [40.0, 30.0, 50.0, 30.0, 50.0, 40.0, 40.0, 40.0]])
    m = ellipse(48, 64, 20, 30, 9, 6)
    area, bbox = rle_stats(uncompressed(m), 48, 64)
    add(102, 11, 3, bbox, area, uncompressed(m))
    m = ellipse(48, 64, 50, 12, 7, 10) | ellipse(48, 64, 58, 40, 4, 3)
    area, bbox = rle_stats(compressed(m), 48, 64)
    add(103, 11, 7, bbox, area, compressed(m))
    m = ellipse(48, 64, 10, 40, 6, 5)
    area, bbox = rle_stats(uncompressed(m), 48, 64)
    add(104, 11, 1, bbox, area, uncompressed(m), iscrowd=1)
    add(105, 11, 1, [70.0, 10.0, 5.0, 5.0], 25.0, [[70.0, 10.0, 75.0, 10.0, 75.0, 15.0]])
    add(106, 11, 3, [10.0, 10.0, 5.0, 5.0], 0.0, [[10.0, 10.0, 15.0, 10.0, 15.0, 15.0]])
    add(107, 11, 3, [10.0, 10.0, 0.5, 5.0], 2.0, [[10.0, 10.0, 10.5, 10.0, 10.5, 15.0]])
    add(108, 11, 99, [10.0, 10.0, 5.0, 5.0], 25.0, [[10.0, 10.0, 15.0, 10.0, 15.0, 15.0]])
    add(109, 11, 1, [20.0, 20.0, 5.0, 5.0], 25.0, [[20.0, 20.0, 25.0, 20.0, 25.0, 25.0]], ignore=1)
    add(110, 11, 7, [-5.0, 30.0, 20.0, 10.0], 100.0, [[-5.0, 30.0, 15.0, 30.0, 15.0, 40.0, -5.0, 40.0]])
    add(111, 11, 1, [64.0, 5.0, 10.0, 5.0], 50.0, [[64.0, 5.0, 74.0, 5.0, 74.0, 10.0]])
    # Image 5 (40x56): fractional polygons, a crowd given as compressed RLE.
    add(201, 5, 7, [3.3, 7.7, 20.1, 30.6], 300.0, [[3.3, 7.7, 23.4, 12.1, 18.2, 38.3, 5.0, 30.0]])
    add(202, 5, 3, [20.0, 30.0, 15.5, 20.25], 150.0, [[20.0, 50.25, 35.5, 30.0, 35.5, 50.25]])
    m = ellipse(56, 40, 30, 10, 5, 4)
    area, bbox = rle_stats(compressed(m), 56, 40)
    add(203, 5, 1, bbox, area, compressed(m), iscrowd=1)
    # Image 20 (72x30): under 32 px, dropped for training.
    add(301, 20, 1, [10.0, 5.0, 20.0, 15.0], 150.0, [[10.0, 5.0, 30.0, 5.0, 30.0, 20.0, 10.0, 20.0]])
    # Image 3 (48x36): only a crowd (mmdetection keeps it for training).
    m = ellipse(36, 48, 24, 18, 10, 8)
    area, bbox = rle_stats(uncompressed(m), 36, 48)
    add(401, 3, 3, bbox, area, uncompressed(m), iscrowd=1)
    # Image 8 (50x40): only an unknown category (dropped for training).
    add(501, 8, 42, [5.0, 5.0, 10.0, 10.0], 100.0, [[5.0, 5.0, 15.0, 5.0, 15.0, 15.0]])
    # Image 9 (44x44): no annotations (dropped for training).

    os.makedirs(OUT, exist_ok=True)
    pixel_sums = {}
    for img_id, name, w, h in images:
        pix = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(pix).save(os.path.join(OUT, name))
        pixel_sums[img_id] = int(pix.astype(np.int64).sum())
    dataset = {
        "images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, w, h in images],
        "annotations": anns,
        "categories": categories,
    }
    ann_file = os.path.join(OUT, "instances.json")
    with open(ann_file, "w") as f:
        json.dump(dataset, f)
    return ann_file, pixel_sums


def row_major_runs(mask):
    flat = mask.reshape(-1)
    runs, cur, run = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(run)
            run, cur = 0, v
        run += 1
    runs.append(run)
    return runs


def f32(v):
    return float(np.float32(v))


def parse(coco, img, cat_ids):
    """mmdetection 2.11 `_parse_ann_info`, with the masks from pycocotools' `annToMask`."""
    cat2label = {c: i for i, c in enumerate(cat_ids)}
    out = {"image_id": img["id"], "file_name": img["file_name"], "width": img["width"],
           "height": img["height"], "boxes": [], "labels": [], "ann_ids": [], "ignore_boxes": [],
           "masks": []}
    for ann in coco.loadAnns(coco.getAnnIds(imgIds=[img["id"]])):
        if ann.get("ignore", False):
            continue
        x1, y1, w, h = ann["bbox"]
        inter_w = max(0, min(x1 + w, img["width"]) - max(x1, 0))
        inter_h = max(0, min(y1 + h, img["height"]) - max(y1, 0))
        if inter_w * inter_h == 0:
            continue
        if ann["area"] <= 0 or w < 1 or h < 1:
            continue
        if ann["category_id"] not in cat_ids:
            continue
        box = [f32(x1), f32(y1), f32(x1 + w), f32(y1 + h)]
        if ann.get("iscrowd", False):
            out["ignore_boxes"].append(box)
        else:
            out["boxes"].append(box)
            out["labels"].append(cat2label[ann["category_id"]])
            out["ann_ids"].append(ann["id"])
            mask = coco.annToMask(ann)
            assert mask.shape == (img["height"], img["width"])
            out["masks"].append(row_major_runs(mask))
    return out


def main():
    ann_file, pixel_sums = build()
    coco = COCO(ann_file)
    cat_ids = sorted(coco.getCatIds())
    img_ids = list(coco.imgs.keys())  # file order, as mmdetection's get_img_ids
    # mmdetection `_filter_imgs`: an annotation of a listed category, and min(w, h) >= 32.
    ids_with_ann = set(a["image_id"] for a in coco.anns.values())
    ids_in_cat = set()
    for c in cat_ids:
        ids_in_cat |= set(coco.catToImgs[c])
    ids_in_cat &= ids_with_ann
    test, train = [], []
    for i in img_ids:
        img = coco.imgs[i]
        rec = parse(coco, img, cat_ids)
        rec["pixel_sum"] = pixel_sums[i]
        test.append(rec)
        if i in ids_in_cat and min(img["width"], img["height"]) >= 32:
            train.append(rec)
    expected = {"cat_ids": cat_ids, "class_names": [coco.cats[c]["name"] for c in cat_ids],
                "test": test, "train": train}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f)
    print(f"{len(test)} images, {len(train)} kept for training; "
          f"{sum(len(r['boxes']) for r in test)} objects")


if __name__ == "__main__":
    main()
