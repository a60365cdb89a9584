"""Expected output of `nextdet classify` on a committed image and checkpoint.

The reduced ConvNeXt-T checkpoint (`tests/fixtures/checkpoints/convnext_tiny_official.pth`,
dims 4/8/8/16, 10 classes) classifies `tests/fixtures/datasets/small_37x23.png` after the
evaluation preprocessing of the ConvNeXt code at input size 32 (resize the short side to
int(32 / 0.875) = 36 with PIL bicubic, center crop 32, ImageNet mean/std). Writes the softmax
probabilities to `tests/fixtures/cli/classify_expected.json`.

Rerun from the repository root: /path/to/ref/bin/python tests/reference/make_cli_fixtures.py
"""

import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(__file__))

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torchvision import transforms  # noqa: E402

from convnext_ref import ConvNeXt  # noqa: E402

CKPT = "tests/fixtures/checkpoints/convnext_tiny_official.pth"
IMAGE = "tests/fixtures/datasets/small_37x23.png"
OUT = "tests/fixtures/cli/classify_expected.json"


def main():
    model = ConvNeXt([3, 3, 9, 3], [4, 8, 8, 16], 10).eval()
    model.load_state_dict(torch.load(CKPT, map_location="cpu")["model"])
    tf = transforms.Compose([
        transforms.Resize(int(32 / 0.875), interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(32),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    x = tf(Image.open(IMAGE).convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"image": IMAGE, "checkpoint": CKPT, "probs": [float(p) for p in probs]}, f, indent=1)
    print("wrote", OUT, [round(float(p), 4) for p in probs])


if __name__ == "__main__":
    main()
