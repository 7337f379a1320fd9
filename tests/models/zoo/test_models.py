"""The zoo's architectures without their weights: layers against NumPy, sizes against torch's files."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxtransfer import zoo
from jaxtransfer._nnx import get_value
from jaxtransfer.models.zoo._layers import ConvBN, assign_torch_weights

# Number of floating-point values in each weight file (parameters and batch-norm
# running statistics), as counted by torch 2.13.0's torch.load(weights_only=True).
TORCH_FLOAT_NUMEL = {
    "mobilenet_v2": 3_538_984,
    "efficientnet_lite0": 4_694_024,
    "efficientnet_lite1": 5_470_344,
    "efficientnet_lite2": 6_150_168,
}
STAGE_CHANNELS = {
    "mobilenet_v2": (16, 24, 32, 64, 96, 160, 320),
    "efficientnet_lite0": (16, 24, 40, 80, 112, 192, 320),
    "efficientnet_lite1": (16, 24, 40, 80, 112, 192, 320),
    "efficientnet_lite2": (16, 24, 48, 88, 120, 208, 352),
}


def _numpy_conv(x, w, stride, pads, groups):
    """Direct convolution: x [B,H,W,C], torch-layout w [O, C/g, k, k], pads ((top, bottom), (left, right))."""
    xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
    o, cg, k, _ = w.shape
    ho = (xp.shape[1] - k) // stride + 1
    wo = (xp.shape[2] - k) // stride + 1
    og = o // groups
    out = np.zeros((x.shape[0], ho, wo, o))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, i * stride : i * stride + k, j * stride : j * stride + k, :]  # [B,k,k,C]
            for oc in range(o):
                g = oc // og
                out[:, i, j, oc] = np.einsum("bhwc,chw->b", patch[..., g * cg : (g + 1) * cg], w[oc])
    return out


def _same_pads(size, k, s):
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return (total // 2, total - total // 2)


@pytest.mark.parametrize("padding", ["SAME", "TORCH"])
@pytest.mark.parametrize(
    ("k", "stride", "groups", "size"), [(3, 2, 1, 10), (5, 2, 4, 9), (3, 1, 4, 7), (1, 1, 1, 6)]
)
def test_convbn_matches_numpy(padding, k, stride, groups, size, rng):
    cin, cout, eps = 4, 8, 1e-3
    layer = ConvBN(cin, cout, k, stride=stride, groups=groups, padding=padding, eps=eps, rngs=nnx.Rngs(0))
    w = rng.normal(size=(cout, cin // groups, k, k)).astype(np.float32)
    bn = {
        "b.weight": rng.uniform(0.5, 2, cout),
        "b.bias": rng.normal(size=cout),
        "b.running_mean": rng.normal(size=cout),
        "b.running_var": rng.uniform(0.1, 2, cout),
    }
    weights = {"c.weight": w, **{key: v.astype(np.float32) for key, v in bn.items()}}
    assign_torch_weights(layer, weights, [(layer, ("c", "b"))])
    x = rng.normal(size=(2, size, size + 1, cin)).astype(np.float32)
    got = np.asarray(layer(jnp.asarray(x)))
    if padding == "SAME":
        pads = (_same_pads(size, k, stride), _same_pads(size + 1, k, stride))
    else:
        pads = ((k // 2, k // 2), (k // 2, k // 2))
    ref = _numpy_conv(x.astype(np.float64), w.astype(np.float64), stride, pads, groups)
    ref = (ref - bn["b.running_mean"]) / np.sqrt(bn["b.running_var"] + eps) * bn["b.weight"] + bn["b.bias"]
    ref = np.clip(ref, 0, 6)
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-4)


def test_assign_rejects_mismatched_files():
    layer = ConvBN(2, 3, 3, rngs=nnx.Rngs(0))
    good = {
        "c.weight": np.zeros((3, 2, 3, 3), np.float32),
        **{f"b.{n}": np.ones(3, np.float32) for n in ("weight", "bias", "running_mean", "running_var")},
    }
    with pytest.raises(ValueError, match=r"no tensor 'b\.bias'"):
        assign_torch_weights(layer, {k: v for k, v in good.items() if k != "b.bias"}, [(layer, ("c", "b"))])
    with pytest.raises(ValueError, match=r"has shape \(3, 2, 1, 1\)"):
        assign_torch_weights(
            layer, {**good, "c.weight": np.zeros((3, 2, 1, 1), np.float32)}, [(layer, ("c", "b"))]
        )
    with pytest.raises(ValueError, match="does not use"):
        assign_torch_weights(layer, {**good, "extra.weight": np.zeros(1, np.float32)}, [(layer, ("c", "b"))])


@pytest.mark.parametrize("name", list(TORCH_FLOAT_NUMEL))
def test_architecture_sizes_and_taps(name):
    model = zoo.load(name, pretrained=False)
    numel = sum(get_value(v).size for _, v in nnx.to_flat_state(nnx.state(model)))
    assert numel == TORCH_FLOAT_NUMEL[name]
    assert model.layer_names == ("stem", *(f"stage{i}" for i in range(1, 8)), "head")
    taps = jax.jit(lambda x: model.taps(x))(jnp.zeros((2, 64, 64, 3)))
    assert taps["stem"].shape == (2, 32)
    assert tuple(taps[f"stage{i + 1}"].shape[1] for i in range(7)) == STAGE_CHANNELS[name]
    assert taps["features"].shape == (2, 1280) and taps["logits"].shape == (2, 1000)
    np.testing.assert_array_equal(taps["features"], taps["head"])
    assert all(bool(jnp.all(jnp.isfinite(v))) for v in taps.values())


def test_load_torch_weights_names_missing_tensors():
    with pytest.raises(ValueError, match=r"no tensor 'features\.0\.0\.weight'"):
        zoo.MobileNetV2(rngs=nnx.Rngs(0)).load_torch_weights({})
    with pytest.raises(ValueError, match=r"no tensor '_conv_stem\.weight'"):
        zoo.EfficientNetLite("lite0", rngs=nnx.Rngs(0)).load_torch_weights({})
    with pytest.raises(ValueError, match="variant must be one of"):
        zoo.EfficientNetLite("lite9", rngs=nnx.Rngs(0))


def test_preprocess_crop_normalise_and_grey():
    pre = zoo.Preprocess(4, 4, (0.5, 0.25, 0.0), (0.5, 0.25, 1.0))
    img = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    got = np.asarray(pre(img))  # no resize needed: the shorter side is already 4; crop the middle 4 columns
    ref = (img[:, :, 1:5, :] / 255.0 - np.array([0.5, 0.25, 0.0])) / np.array([0.5, 0.25, 1.0])
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    grey = np.full((1, 10, 20), 0.25, np.float32)  # floats are taken as [0, 1]; grey repeats to RGB
    out = np.asarray(zoo.Preprocess(8, 9, (0.0,) * 3, (1.0,) * 3)(grey))
    assert out.shape == (1, 8, 8, 3)
    np.testing.assert_allclose(out, 0.25, rtol=1e-6)


def test_zoo_specs():
    assert zoo.available() == tuple(TORCH_FLOAT_NUMEL)
    assert [zoo.get_spec(n).image_size for n in zoo.available()] == [224, 224, 240, 260]
    with pytest.raises(ValueError, match="name must be one of mobilenet_v2"):
        zoo.load("resnet50")
    names = zoo.imagenet_class_names()
    assert len(names) == 1000 and names[967] == "espresso" and names[285] == "Egyptian cat"
