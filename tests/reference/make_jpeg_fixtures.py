"""Generate JPEG-decoding fixtures for nextdet-datasets: small JPEG files and what PIL and OpenCV
decode them to (both with libjpeg-turbo: islow IDCT, fancy upsampling).

Rerun from the repository root with the reference venv (Pillow with its bundled libjpeg-turbo,
opencv-python-headless; the versions used are recorded in the safetensors metadata):

    /work/ref/bin/python tests/reference/make_jpeg_fixtures.py

Deterministic (numpy seed 0). Every file is written by PIL; a few then get one or two header
bytes changed so that they exercise decoder paths PIL's encoder cannot produce (each such edit
keeps the file valid: same MCU count, same entropy-coded data):

  - sampling factors rewritten in the frame header: a 4:2:0 file becomes 4:1:1 (luma 4x1, the
    integral "int_upsample" path) or 1x4 luma, a 4:2:2 file becomes 4:4:0 (luma 1x2, the
    h1v2 triangle filter), with the image size adjusted to the same MCU count;
  - the Adobe APP14 transform flag of a CMYK file set to 2, which makes it a YCCK file;
  - the start-of-frame marker or precision changed (arithmetic coding, 12-bit), and a progressive
    file cut after its first scans (coefficients left unrefined): kinds the decoder rejects.

Writes tests/fixtures/jpeg/:

  <name>.jpg            the test files
  reference.safetensors
    pil.<name>          uint8 [H, W, 3]  np.asarray(Image.open(path).convert("RGB"))
                                         (timm / torchvision; EXIF orientation not applied)
    cv2.<name>          uint8 [H, W, 3]  cv2.imdecode(bytes, cv2.IMREAD_COLOR)[:, :, ::-1]
                                         (mmdetection's mmcv.imfrombytes; EXIF orientation applied)
  metadata: versions, and "rejected": the names of the files PIL/cv2 decode but nextdet rejects,
  comma-separated (they have no reference arrays).

The two readers agree on every file except the EXIF-oriented ones (cv2 rotates) and CMYK/YCCK
(PIL and OpenCV convert CMYK to RGB with different roundings); the script checks that.
"""

import io
import os

import cv2
import numpy as np
import PIL
import PIL.features
from PIL import Image
from safetensors.numpy import save_file

OUT = os.path.join("tests", "fixtures", "jpeg")


def make_image(rng, w, h, ch=3):
    """Smooth colour waves + uniform noise + a few flat rectangles with sharp edges."""
    x = np.linspace(0.0, 1.0, w)[None, :, None]
    y = np.linspace(0.0, 1.0, h)[:, None, None]
    phase = rng.uniform(0, 6, (1, 1, ch))
    freq = rng.uniform(2, 12, (1, 1, ch))
    img = 127 + 110 * np.sin(freq * (x + 0.7 * y) + phase) + rng.uniform(-35, 35, (h, w, ch))
    for _ in range(3):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        img[y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = rng.integers(0, 256, ch)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(img, mode, **kw):
    buf = io.BytesIO()
    Image.fromarray(img[:, :, 0] if mode == "L" else img, mode).save(buf, "JPEG", **kw)
    return buf.getvalue()


def segments(data):
    """(marker, offset of the marker's 0xFF) of each header segment up to the first SOS."""
    out, i = [], 2
    while True:
        assert data[i] == 0xFF
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        out.append((marker, i))
        if marker == 0xDA:
            return out
        i += 2 + length


def edit_frame(data, factors=None, size=None, marker=None, precision=None):
    """Rewrites the start-of-frame header: sampling factor bytes, (width, height), marker code,
    sample precision."""
    d = bytearray(data)
    (m, i), = [(m, i) for m, i in segments(data) if m in (0xC0, 0xC1, 0xC2)]
    if marker is not None:
        d[i + 1] = marker
    if precision is not None:
        d[i + 4] = precision
    if size is not None:
        w, h = size
        d[i + 5 : i + 7] = h.to_bytes(2, "big")
        d[i + 7 : i + 9] = w.to_bytes(2, "big")
    if factors is not None:
        for k, f in enumerate(factors):
            d[i + 10 + 3 * k + 1] = f
    return bytes(d)


def cut_after_scans(data, n):
    """Keeps the first n scans of a progressive file (and everything before scan n+1's tables)
    and appends an end-of-image marker."""
    i, scans = 2, 0
    while True:
        assert data[i] == 0xFF
        marker, length = data[i + 1], int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA and scans == n:
            break
        if marker == 0xC4 and scans == n:
            break
        i += 2 + length
        if marker == 0xDA:
            scans += 1
            # Entropy-coded data: up to a marker other than a stuffed 0xFF00 or a restart.
            while not (data[i] == 0xFF and data[i + 1] != 0 and not 0xD0 <= data[i + 1] <= 0xD7):
                i += 1
    return data[:i] + b"\xff\xd9"


def main():
    rng = np.random.default_rng(0)
    os.makedirs(OUT, exist_ok=True)
    files = {}
    rgb = make_image(rng, 37, 29)
    files["ycc444"] = encode(rgb, "RGB", quality=90, subsampling=0)
    files["ycc422"] = encode(rgb, "RGB", quality=90, subsampling=1)
    files["ycc420"] = encode(rgb, "RGB", quality=90, subsampling=2)
    files["ycc420_q100"] = encode(rgb, "RGB", quality=100, subsampling=2)
    files["ycc420_q5"] = encode(rgb, "RGB", quality=5, subsampling=2)
    files["ycc420_optimized_restarts"] = encode(rgb, "RGB", quality=85, subsampling=2, optimize=True,
                                                restart_marker_blocks=2)
    files["ycc420_progressive"] = encode(rgb, "RGB", quality=90, subsampling=2, progressive=True)
    files["ycc444_progressive_restarts"] = encode(rgb, "RGB", quality=80, subsampling=0, progressive=True,
                                                  restart_marker_blocks=3)
    files["ycc422_progressive"] = encode(rgb, "RGB", quality=75, subsampling=1, progressive=True)
    files["rgb_adobe"] = encode(rgb, "RGB", quality=90, keep_rgb=True)
    gray = make_image(rng, 29, 23, 1)
    files["gray"] = encode(gray, "L", quality=90)
    files["gray_progressive"] = encode(gray, "L", quality=90, progressive=True)
    # Chroma no more than 2 samples wide: box upsampling instead of the triangle filter.
    files["ycc420_3x5"] = encode(make_image(rng, 3, 5), "RGB", quality=90, subsampling=2)
    files["ycc420_1x1"] = encode(make_image(rng, 1, 1), "RGB", quality=90, subsampling=2)
    files["ycc422_4x2"] = encode(make_image(rng, 4, 2), "RGB", quality=90, subsampling=1)
    # Sampling factors PIL does not write: 32x32 4:2:0 = 4 MCUs of 4 luma blocks + 2 chroma blocks.
    base = make_image(rng, 32, 32)
    ycc420_32 = encode(base, "RGB", quality=90, subsampling=2)
    files["ycc411"] = edit_frame(ycc420_32, factors=[0x41, 0x11, 0x11], size=(61, 15))  # 2x2 MCUs of 32x8
    files["ycc_luma1x4"] = edit_frame(ycc420_32, factors=[0x14, 0x11, 0x11], size=(13, 59))  # 2x2 of 8x32
    ycc422_32 = encode(base, "RGB", quality=90, subsampling=1)  # 2x4 MCUs of 16x8
    files["ycc440"] = edit_frame(ycc422_32, factors=[0x12, 0x11, 0x11], size=(15, 61))  # 2x4 of 8x16
    cmyk = make_image(rng, 23, 17, 4)
    files["cmyk"] = encode(cmyk, "CMYK", quality=90)
    ycck = bytearray(files["cmyk"])
    adobe = bytes(ycck).find(b"Adobe")
    assert ycck[adobe + 11] == 0
    ycck[adobe + 11] = 2
    files["ycck"] = bytes(ycck)
    small = make_image(rng, 7, 5)
    for o in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = o
        files[f"exif_orientation_{o}"] = encode(small, "RGB", quality=95, subsampling=2, exif=exif)
    # Rejected kinds (PIL decodes the first; the arithmetic and 12-bit headers are invalid for the
    # data that follows, so the reference readers fail or produce noise: no arrays for them).
    prog = files["ycc420_progressive"]
    rejected = {
        "progressive_unrefined": cut_after_scans(prog, 4),
        "arithmetic_header": edit_frame(files["ycc420"], marker=0xC9),
        "precision12_header": edit_frame(files["ycc420"], precision=12),
    }

    tensors = {}
    for name, data in files.items():
        with open(os.path.join(OUT, f"{name}.jpg"), "wb") as f:
            f.write(data)
        pil = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        cv = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
        same = pil.shape == cv.shape and (pil == cv).all()
        expected_same = not (name.startswith("exif_orientation_") and name[-1] != "1") and name not in ("cmyk", "ycck")
        assert same == expected_same, name
        tensors[f"pil.{name}"] = np.ascontiguousarray(pil)
        tensors[f"cv2.{name}"] = np.ascontiguousarray(cv)
    for name, data in rejected.items():
        with open(os.path.join(OUT, f"{name}.jpg"), "wb") as f:
            f.write(data)
    # The unrefined progressive file is a valid JPEG that libjpeg-turbo decodes (with block
    # smoothing); check that it really is.
    Image.open(io.BytesIO(rejected["progressive_unrefined"])).convert("RGB")
    meta = {
        "pillow": PIL.__version__,
        "pil_libjpeg_turbo": str(PIL.features.version("libjpeg_turbo")),
        "opencv": cv2.__version__,
        "rejected": ",".join(rejected),
    }
    path = os.path.join(OUT, "reference.safetensors")
    save_file(tensors, path, metadata=meta)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(files) + len(rejected)} JPEGs and {path} ({len(tensors)} arrays), {total} bytes in all")
    print(meta)


if __name__ == "__main__":
    main()
