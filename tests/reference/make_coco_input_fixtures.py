"""Writes tests/fixtures/coco_inputs/: malformed and edge-case COCO inputs, and what pycocotools does
with each (its 12 stats and per-category AP when it accepts the input, the exception when it does
not).

Run from the repository root after make_coco_eval_fixtures.py (it starts from that script's gt.json,
dt_bbox.json and dt_segm.json): `/work/ref/bin/python tests/reference/make_coco_input_fixtures.py`.

Each case is a (ground truth, results, iou type) triple run through pycocotools exactly as
`COCOeval(COCO(gt), COCO(gt).loadRes(dt), iou_type)` + evaluate/accumulate/summarize. Cases:
- duplicate annotation ids in the ground truth (across images, inside one image, between
  categories), for boxes and masks: pycocotools' `createIndex` keeps the last annotation of an id
  in `anns` while `imgToAnns` keeps every occurrence, and `loadAnns` maps ids back through `anns`;
- results that are a JSON object, results without `score` (of a ground-truth category and of an
  unknown one), without `bbox` after a first result that has one, with neither `bbox` nor
  `segmentation`, polygon results without `bbox`, results on an image not in the ground truth,
  results without `category_id` or `image_id`;
- ground truth that is a list, annotations without `bbox`, `segmentation` or `area`, an
  annotation without `bbox` on an image that is not in the ground truth.
"""

import copy
import io
import json
import os
from contextlib import redirect_stdout

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

SRC = os.path.join("tests", "fixtures", "coco")
OUT = os.path.join("tests", "fixtures", "coco_inputs")


def load(name):
    with open(os.path.join(SRC, name)) as f:
        return json.load(f)


def run(gt_name, dt_name, iou_type):
    """pycocotools on two files of OUT: ("ok", stats, per-category AP) or ("error", exception)."""
    try:
        with redirect_stdout(io.StringIO()):
            coco_gt = COCO(os.path.join(OUT, gt_name))
            coco_dt = coco_gt.loadRes(os.path.join(OUT, dt_name))
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
    except Exception as e:  # noqa: BLE001 -- any failure is a rejection
        return {"accepted": False, "error": f"{type(e).__name__}: {e}"}
    per_cat = []
    for k, cat_id in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        p = p[p > -1]
        per_cat.append({"id": int(cat_id), "name": coco_gt.cats[cat_id]["name"],
                        "ap": float(np.mean(p)) if p.size else -1.0})
    return {"accepted": True, "stats": [float(s) for s in ev.stats], "per_category": per_cat}


def main():
    os.makedirs(OUT, exist_ok=True)
    gt = load("gt.json")
    dt_bbox = load("dt_bbox.json")
    dt_segm = load("dt_segm.json")
    files = {"gt.json": gt, "dt_bbox.json": dt_bbox, "dt_segm.json": dt_segm}

    # Duplicate ids: annotation 2 (image 1) takes id 9 (image 2), 5 and 6 (image 1, categories
    # 7 and 2) share id 5, and 14 (image 4) takes id 13 (image 4, another category).
    dup = copy.deepcopy(gt)
    for a in dup["annotations"]:
        a["id"] = {2: 9, 6: 5, 14: 13}.get(a["id"], a["id"])
    files["gt_duplicate_ids.json"] = dup

    files["gt_list.json"] = gt["annotations"]
    for key in ["bbox", "segmentation", "area"]:
        g = copy.deepcopy(gt)
        del g["annotations"][3][key]
        files[f"gt_no_{key}.json"] = g
    stray = copy.deepcopy(gt)
    stray["annotations"].append({"id": 100, "image_id": 999, "category_id": 1, "iscrowd": 0, "area": 5.0,
                                 "segmentation": [[1, 1, 4, 1, 4, 4]]})
    files["gt_stray_without_bbox.json"] = stray

    files["dt_object.json"] = {"annotations": dt_bbox}
    no_score = copy.deepcopy(dt_bbox)
    del no_score[4]["score"]
    files["dt_no_score.json"] = no_score
    no_score_unknown = copy.deepcopy(dt_bbox)
    no_score_unknown.append({"image_id": 1, "category_id": 99, "bbox": [1, 2, 3, 4]})
    files["dt_no_score_unknown_category.json"] = no_score_unknown
    no_bbox = copy.deepcopy(dt_bbox)
    del no_bbox[5]["bbox"]
    files["dt_no_bbox.json"] = no_bbox
    files["dt_neither.json"] = [{k: v for k, v in d.items() if k != "bbox"} for d in dt_bbox]
    poly = [{k: v for k, v in d.items() if k != "bbox"} for d in dt_bbox]
    for d, b in zip(poly, dt_bbox):
        x, y, w, h = b["bbox"]
        d["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    files["dt_polygons_no_bbox.json"] = poly
    unknown_image = copy.deepcopy(dt_bbox)
    unknown_image[2]["image_id"] = 999
    files["dt_unknown_image.json"] = unknown_image
    for key in ["category_id", "image_id"]:
        d = copy.deepcopy(dt_bbox)
        del d[1][key]
        files[f"dt_no_{key}.json"] = d

    for name, obj in files.items():
        with open(os.path.join(OUT, name), "w") as f:
            json.dump(obj, f)

    cases = [
        ("gt_duplicate_ids.json", "dt_bbox.json", "bbox"),
        ("gt_duplicate_ids.json", "dt_segm.json", "segm"),
        ("gt_list.json", "dt_bbox.json", "bbox"),
        ("gt_no_bbox.json", "dt_bbox.json", "bbox"),
        ("gt_no_bbox.json", "dt_segm.json", "segm"),
        ("gt_no_segmentation.json", "dt_segm.json", "segm"),
        ("gt_no_segmentation.json", "dt_bbox.json", "bbox"),
        ("gt_no_area.json", "dt_bbox.json", "bbox"),
        ("gt_stray_without_bbox.json", "dt_bbox.json", "bbox"),
        ("gt.json", "dt_object.json", "bbox"),
        ("gt.json", "dt_no_score.json", "bbox"),
        ("gt.json", "dt_no_score_unknown_category.json", "bbox"),
        ("gt.json", "dt_no_bbox.json", "bbox"),
        ("gt.json", "dt_neither.json", "bbox"),
        ("gt.json", "dt_polygons_no_bbox.json", "segm"),
        ("gt.json", "dt_unknown_image.json", "bbox"),
        ("gt.json", "dt_no_category_id.json", "bbox"),
        ("gt.json", "dt_no_image_id.json", "bbox"),
    ]
    expected = []
    for gt_name, dt_name, iou_type in cases:
        r = run(gt_name, dt_name, iou_type)
        expected.append({"gt": gt_name, "dt": dt_name, "iou_type": iou_type, **r})
        what = " ".join(f"{s:.4f}" for s in r["stats"]) if r["accepted"] else r["error"]
        print(f"{gt_name} {dt_name} {iou_type}: {what}")
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)


if __name__ == "__main__":
    main()
