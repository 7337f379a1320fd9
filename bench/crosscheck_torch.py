"""Check the zoo's Flax ports against independent PyTorch implementations of the same networks.

MobileNetV2 is compared with torchvision's ``mobilenet_v2`` and EfficientNet-Lite
with timm's ``tf_efficientnet_lite*`` (TensorFlow-style "SAME" padding, ε = 1e-3),
each loaded with the very tensors the zoo converted. Both get the same
preprocessed photos (scikit-image's chelsea, coffee, rocket, astronaut) and the
logits are compared. torch, torchvision and timm are not dependencies of
jaxtransfer; run this where they are installed (they are on the lent GPU
machines). Backbones whose weights are not cached are skipped and listed.

    JAXTRANSFER_OFFLINE=1 python bench/crosscheck_torch.py --out bench/results/crosscheck_torch.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from jaxtransfer import zoo
from jaxtransfer.apps.reproduce import code_version


def _torch_reference(name: str, weights: dict):
    import timm
    import torch
    import torchvision

    tensors = {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}
    if name == "mobilenet_v2":
        ref = torchvision.models.mobilenet_v2()
        ref.load_state_dict(tensors)
        return ref.eval()
    ref = timm.create_model(f"tf_{name}", pretrained=False)
    theirs = ref.state_dict()
    if len(theirs) != len(tensors):
        raise ValueError(f"{name}: timm has {len(theirs)} tensors, the file {len(tensors)}")
    mapped = {}
    for (key, value), (ours, tensor) in zip(theirs.items(), tensors.items(), strict=True):
        if tuple(value.shape) != tuple(tensor.shape):
            raise ValueError(f"{name}: timm {key} {tuple(value.shape)} vs file {ours} {tuple(tensor.shape)}")
        mapped[key] = tensor
    ref.load_state_dict(mapped)
    return ref.eval()


def run() -> dict:
    import torch
    from skimage import data

    photos = {k: getattr(data, k)() for k in ("chelsea", "coffee", "rocket", "astronaut")}
    rows, skipped = [], []
    for name in zoo.available():
        try:
            model = zoo.load(name)
        except zoo.WeightsUnavailableError:
            skipped.append(name)
            continue
        batch = np.concatenate([np.asarray(model.preprocess(img[None])) for img in photos.values()])
        ours = np.asarray(nnx.jit(lambda m, x: m(x))(model, batch), np.float64)
        ref = _torch_reference(name, zoo.torch_weights(name)).double()
        with torch.no_grad():
            theirs = ref(torch.from_numpy(batch.astype(np.float64)).permute(0, 3, 1, 2)).numpy()
        p_ours, p_theirs = jax.nn.softmax(ours), jax.nn.softmax(theirs)
        rows.append({
            "model": name,
            "reference": "torchvision mobilenet_v2" if name == "mobilenet_v2" else f"timm tf_{name}",
            "max_abs_logit_diff": float(np.max(np.abs(ours - theirs))),
            "logit_scale": float(np.max(np.abs(theirs))),
            "max_abs_prob_diff": float(np.max(np.abs(np.asarray(p_ours) - np.asarray(p_theirs)))),
            "top1_ours": {k: int(i) for k, i in zip(photos, ours.argmax(1), strict=True)},
            "top1_reference": {k: int(i) for k, i in zip(photos, theirs.argmax(1), strict=True)},
            "top1_prob_ours": {k: float(p) for k, p in zip(photos, np.max(p_ours, axis=1), strict=True)},
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return {
        "code": code_version(),
        "device": str(jax.devices()[0]),
        "jax": jax.__version__,
        "torch": torch.__version__,
        "results": rows,
        "skipped_not_cached": skipped,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the JSON report here")
    args = parser.parse_args(argv)
    result = run()
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
