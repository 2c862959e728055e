"""Objectives: composition, the text grammar, and what each term computes."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dream_jax import objectives as obj
from dream_jax.objectives import ObjectiveError


@pytest.mark.parametrize("text", [
    "inception_4c/output",
    "inception_4c/output + 0.5*channel(inception_4d/3x3_reduce,139)",
    "-mean(conv2/norm2) - 2*class(1)",
    "neuron(inception_4c/output,3,0.2,0.9)",
    "guide(inception_3b/output) + 1e-3*l2(inception_5b/output)",
])
def test_text_round_trips(text):
    parsed = obj.parse(text)
    assert obj.parse(str(parsed)) == parsed


def test_composition_matches_text():
    built = obj.layer("inception_4c/output") + 0.5 * obj.channel("inception_4d/3x3_reduce", 139)
    assert built == obj.parse("inception_4c/output + 0.5*channel(inception_4d/3x3_reduce, 139)")
    assert (built - obj.mean("conv2/norm2")).weights == (1.0, 0.5, -1.0)
    assert (-built).weights == (-1.0, -0.5)


def test_layers_are_in_network_order():
    o = obj.parse("inception_5b/output + channel(conv2/norm2, 3) + class(7)")
    assert o.layers == ("conv2/norm2", "inception_5b/output", "loss3/classifier")


@pytest.mark.parametrize("text,message", [
    ("", "empty"),
    ("inception_9z/output", "valid layers: conv1/7x7_s2"),
    ("channel(inception_4c/output, 512)", "out of range"),
    ("channel(inception_4c/output, -1)", "out of range"),
    ("foo(inception_4c/output)", "unknown objective function"),
    ("inception_4c/output +", "ends with an operator"),
    ("+ + inception_4c/output", "two operators"),
    ("inception_4c/output inception_3b/output", "missing '+'"),
    ("1.5", "followed by '*'"),
    ("channel(inception_4c/output)", "takes 2 argument"),
    ("channel(inception_4c/output, 1.5)", "integer"),
    ("neuron(inception_4c/output, 1, 2, 0.5)", "fractions"),
    ("inception_4c/output & 2", "cannot parse"),
])
def test_bad_objectives_are_one_line_errors(text, message):
    with pytest.raises(ObjectiveError, match=re.escape(message)) as info:
        obj.parse(text)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text,closest", [
    ("inception_4c/ouput", "inception_4c/output"),
    ("channel(inception_4d/3x3_reduc, 3)", "inception_4d/3x3_reduce"),
    ("mean(conv2/norm)", "conv2/norm2"),
])
def test_unknown_layer_names_the_closest_one_first(text, closest):
    with pytest.raises(ObjectiveError) as info:
        obj.parse(text)
    message = str(info.value)
    assert "\n" not in message
    suggestion = f"; did you mean {closest!r}? valid layers: conv1/7x7_s2, "
    assert suggestion in message, message
    assert message.index("did you mean") < message.index("valid layers")


def test_unknown_layer_without_a_close_name_suggests_nothing():
    with pytest.raises(ObjectiveError, match="valid layers: conv1/7x7_s2") as info:
        obj.parse("mixed4a")
    assert "did you mean" not in str(info.value)


def test_non_finite_weight_is_refused():
    with pytest.raises(ObjectiveError, match="finite"):
        float("nan") * obj.layer("inception_4c/output")


def test_terms_compute_what_they_say():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 6, 512)), jnp.float32)
    logits = jnp.asarray(rng.normal(size=(1000,)), jnp.float32)
    acts = {"inception_4c/output": x, "loss3/classifier": logits}
    guide_features = jnp.asarray(rng.normal(size=(5, 512)), jnp.float32)
    data = {"guide(inception_4c/output)": guide_features}
    cases = {
        obj.L2("inception_4c/output"): 0.5 * float(jnp.sum(x * x)) / 24,
        obj.Mean("inception_4c/output"): float(jnp.mean(x)),
        obj.Channel("inception_4c/output", 7): float(jnp.mean(x[..., 7])),
        obj.Neuron("inception_4c/output", 7): float(x[2, 3, 7]),
        obj.Neuron("inception_4c/output", 7, 0.0, 1.0): float(x[0, 5, 7]),
        obj.ClassLogit(42): float(logits[42]),
        obj.Guide("inception_4c/output"):
            float(jnp.mean(jnp.max(x.reshape(24, 512) @ guide_features.T, axis=1))),
    }
    for term, expected in cases.items():
        np.testing.assert_allclose(float(term(acts, data)), expected, rtol=1e-5, err_msg=str(term))


def test_weight_matrix_aligns_objectives_over_shared_terms():
    a = obj.parse("inception_4c/output + 2*mean(conv2/norm2)")
    b = obj.parse("-mean(conv2/norm2)")
    terms = obj.union_terms([a, b])
    assert terms == (obj.L2("inception_4c/output"), obj.Mean("conv2/norm2"))
    np.testing.assert_array_equal(obj.weight_matrix([a, b], terms), [[1, 2], [0, -1]])


def test_channel_product_value_and_gradient():
    # 1x2 map, 3 channels: means 2 and 5 -> product 10; d/dx[.,a] = mean_b / N = 2.5
    x = jnp.array([[[1.0, 0.0, 4.0], [3.0, 0.0, 6.0]]])
    term = obj.ChannelProduct("inception_3a/output", 0, 2)
    assert float(term({"inception_3a/output": x}, {})) == pytest.approx(10.0)
    grad = jax.grad(lambda a: term({"inception_3a/output": a}, {}))(x)
    np.testing.assert_allclose(grad, [[[2.5, 0.0, 1.0], [2.5, 0.0, 1.0]]])
    parsed = obj.parse("channel_product(inception_3a/output, 0, 2) - 0.5*channel(inception_3a/output,1)")
    assert parsed.terms[0] == term and obj.parse(str(parsed)) == parsed
    with pytest.raises(ObjectiveError, match="channel 256 out of range"):
        obj.channel_product("inception_3a/output", 0, 256)


def test_direction_value_and_gradient():
    x = jnp.zeros((1, 2, 256)).at[0, 0, :3].set(jnp.array([1.0, 2.0, 3.0])).at[0, 1, 0].set(5.0)
    v = np.zeros(256); v[:3] = [1.0, -1.0, 2.0]
    o = obj.direction("inception_3a/output", v)
    term = o.terms[0]
    # positions: 1 - 2 + 6 = 5 and 5 -> mean 5; gradient v / 2 everywhere
    assert float(term({"inception_3a/output": x}, {})) == pytest.approx(5.0)
    grad = jax.grad(lambda a: term({"inception_3a/output": a}, {}))(x)
    np.testing.assert_allclose(grad, np.broadcast_to(v / 2, (1, 2, 256)))
    assert (o - obj.channel("inception_3a/output", 0)).weights == (1.0, -1.0)
    with pytest.raises(ObjectiveError, match="needs 256 numbers"):
        obj.direction("inception_3a/output", [1.0, 2.0])


def test_direction_text_form_names_the_nonzero_channels():
    v = np.zeros(256)
    v[[0, 2, 255]] = [1.0, 2.0, -0.1 / 3]
    built = obj.direction("inception_3a/output", v)
    text = str(built)
    assert text == f"direction(inception_3a/output,0:1.0,2:2.0,255:{-0.1 / 3!r})"
    assert obj.parse(text) == built  # exact: the weights print with repr
    assert obj.parse("direction(inception_3a/output, 2:2, 0:1, 255:-0.1) - mean(conv2/norm2)"
                     ).terms[0].vector[:3] == (1.0, 0.0, 2.0)
    for bad, message in [("direction(inception_3a/output, 3)", "CHANNEL:WEIGHT"),
                         ("direction(inception_3a/output, 256:1)", "channel 256 out of range"),
                         ("direction(inception_3a/output, 1:x)", "expected a number")]:
        with pytest.raises(ObjectiveError, match=message):
            obj.parse(bad)


def test_custom_callable_value_gradient_and_composition():
    x = jnp.array([[[1.0, 2.0], [3.0, 4.0]]])
    o = obj.custom(lambda acts: jnp.sum(acts["conv2/norm2"] ** 2), "conv2/norm2", "energy")
    term = o.terms[0]
    assert float(term({"conv2/norm2": x}, {})) == pytest.approx(30.0)
    np.testing.assert_allclose(jax.grad(lambda a: term({"conv2/norm2": a}, {}))(x), 2 * x)
    both = 2 * o - obj.mean("conv2/norm2")
    assert both.weights == (2.0, -1.0) and str(both).startswith("2*energy(conv2/norm2)")
    value = obj.evaluate(both.terms, both.weights, {"conv2/norm2": x}, {})
    assert float(value) == pytest.approx(60.0 - 2.5)


def test_class_index_is_checked_against_the_model_in_use():
    objective = obj.parse("class(1000)")  # a class count is the model's, known once it loads
    obj.check_classes(obj.parse("class(364)"), 365)
    with pytest.raises(ObjectiveError, match=r"class 1000 out of range: this model has 1000 "
                                             r"classes \(0..999\)"):
        obj.check_classes(objective, 1000)
