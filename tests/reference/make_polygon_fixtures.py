"""Polygon rasterization reference: pycocotools `frPyObjects` + `merge` + `decode` on
non-square images, for evaluation/tests/masks.rs.

Writes tests/fixtures/coco/polygons.json: for each case the image size, the polygons (several
per object, vertices on pixel edges, outside the image, concave, tiny, and fractional) and the
row-major mask as a list of foreground indices, plus pycocotools' area.

Rerun from the repository root: /path/to/ref/bin/python tests/reference/make_polygon_fixtures.py
"""

import json
import os

import numpy as np
from pycocotools import mask as mask_utils

OUT = "tests/fixtures/coco/polygons.json"


def cases():
    rng = np.random.default_rng(0)
    yield 37, 53, [[3.0, 4.0, 40.5, 6.2, 30.0, 30.0, 5.5, 28.0]]
    yield 80, 120, [[10.0, 10.0, 110.0, 10.0, 110.0, 70.0, 60.0, 20.0, 10.0, 70.0],
                    [0.0, 0.0, 5.0, 0.0, 5.0, 5.0, 0.0, 5.0]]
    yield 23, 61, [[-10.0, -5.0, 70.0, 2.0, 30.0, 40.0]]
    yield 50, 31, [[12.2, 20.7, 12.9, 20.7, 12.9, 21.4]]
    for h, w in ((41, 97), (64, 29)):
        polys = []
        for _ in range(3):
            n = int(rng.integers(3, 9))
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = rng.uniform(2, min(h, w) / 2, n)
            xy = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).reshape(-1)
            polys.append([round(float(v), 3) for v in xy])
        yield h, w, polys


def main():
    out = []
    for h, w, polys in cases():
        rles = mask_utils.frPyObjects(polys, h, w)
        rle = mask_utils.merge(rles)
        m = mask_utils.decode(rle)  # H x W
        out.append({"height": h, "width": w, "polygons": polys,
                    "foreground": [int(i) for i in np.flatnonzero(m.reshape(-1))],
                    "area": int(mask_utils.area(rle))})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(out, f)
    print("wrote", OUT, [c["area"] for c in out])


if __name__ == "__main__":
    main()
