"""Objectives: composition, the text grammar, and what each term computes."""
import re
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dream_jax.objectives import parser
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


# --- one definition per term: constructor, text form, checks, help line ---

EXAMPLES = {  # one text per registered term; a new term without one fails below
    "l2": "l2(inception_3a/output)", "mean": "mean(conv2/norm2)",
    "channel": "channel(inception_3a/output,7)", "neuron": "neuron(inception_3a/output,7,0.25)",
    "class": "class(42)", "guide": "guide(inception_3b/output)",
    "channel_product": "channel_product(inception_3a/output,1,2)",
    "direction": "direction(inception_3a/output,0:1.5,9:-0.25)",
    "diversity": "diversity(inception_3a/output)", "tv": "tv()", "blur": "blur()",
    "image_l1": "image_l1()", "image_l2": "image_l2()", "input_distance": "input_distance()",
}


def test_every_registered_term_has_a_constructor_a_text_form_and_a_help_line():
    assert set(EXAMPLES) == set(obj.REGISTRY)
    for name, cls in obj.REGISTRY.items():
        parsed = obj.parse(EXAMPLES[name])
        assert type(parsed.terms[0]) is cls and obj.parse(str(parsed)) == parsed
        constructor = getattr(obj, cls.python)
        assert cls.signature() in constructor.__doc__ and cls.help
        args = [getattr(parsed.terms[0], f.name) for f in cls.args()]
        assert constructor(*args) == parsed, name


def test_readme_lists_every_term_with_its_help_line():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert obj.help_table() in readme


# --- structure and data ---

@pytest.mark.parametrize("a,b", [
    ("channel(inception_4c/output,3)", "channel(inception_4c/output,300)"),
    ("neuron(inception_4c/output,3)", "neuron(inception_4c/output,4,0.1,0.9)"),
    ("class(1)", "class(999)"),
    ("channel_product(inception_4c/output,1,2)", "channel_product(inception_4c/output,5,5)"),
    ("direction(inception_4c/output,1:2.0)", "direction(inception_4c/output,7:-1.0,8:0.5)"),
    ("channel(inception_4c/output,3) - 0.1*tv()", "0.7*channel(inception_4c/output,9) - 2*tv()"),
])
def test_indices_positions_vectors_and_weights_are_data_not_structure(a, b):
    a, b = obj.parse(a), obj.parse(b)
    assert a != b and obj.slots_of([a]) == obj.slots_of([b]) == obj.slots_of([a, b])


@pytest.mark.parametrize("a,b", [
    ("channel(inception_4c/output,3)", "channel(inception_4d/output,3)"),
    ("channel(inception_4c/output,3)", "neuron(inception_4c/output,3)"),
    ("channel(inception_4c/output,3)", "channel(inception_4c/output,3) - tv()"),
    ("image_l1()", "image_l2()"),
])
def test_layers_and_kinds_of_terms_are_structure(a, b):
    assert obj.slots_of([obj.parse(a)]) != obj.slots_of([obj.parse(b)])


def test_objectives_of_one_structure_bind_their_own_indices_and_weights():
    objectives = [obj.parse("channel(inception_4c/output,3) - 0.5*tv()"),
                  obj.parse("2*channel(inception_4c/output,9)"),
                  obj.parse("channel(inception_4c/output,1) + channel(inception_4c/output,2)")]
    slots = obj.slots_of(objectives)
    assert slots == (obj.Channel("inception_4c/output", None), obj.TotalVariation(),
                     obj.Channel("inception_4c/output", None))
    bound = obj.bind(objectives, slots)
    np.testing.assert_array_equal(bound.weights, [[1, -0.5, 0], [2, 0, 0], [1, 0, 1]])
    np.testing.assert_array_equal(bound.values[0]["channel"], [3, 9, 1])
    np.testing.assert_array_equal(bound.values[2]["channel"], [0, 0, 2])  # absent: weight 0
    assert bound.values[0]["channel"].dtype == np.int32


def test_bound_terms_evaluate_as_the_terms_themselves():
    """Traced indices, positions and vectors give the static terms' values."""
    rng = np.random.default_rng(1)
    acts = {"inception_3a/output": jnp.asarray(rng.normal(size=(5, 7, 256)), jnp.float32),
            "loss3/classifier": jnp.asarray(rng.normal(size=(1000,)), jnp.float32),
            obj.INPUT: jnp.asarray(rng.normal(size=(20, 28, 3)), jnp.float32)}
    texts = ["channel(inception_3a/output,7) - 0.3*tv()", "neuron(inception_3a/output,9,0.3,1)",
             "neuron(inception_3a/output,2,0,0.61) + 2*class(17)", "class(999) - image_l2()",
             "channel_product(inception_3a/output,4,200)",
             "direction(inception_3a/output,0:1,255:-2)"]
    objectives = [obj.parse(t) for t in texts]
    slots = obj.slots_of(objectives)
    bound = obj.bind(objectives, slots)
    values = jax.jit(jax.vmap(lambda b: obj.evaluate(slots, b, acts, {})))(bound)
    for o, value in zip(objectives, values):
        expected = obj.evaluate(o.terms, o.weights, acts, {})
        np.testing.assert_allclose(value, expected, rtol=1e-5, err_msg=str(o))


def test_neuron_positions_pick_the_rows_and_columns_they_name():
    x = jnp.arange(4 * 6 * 2, dtype=jnp.float32).reshape(4, 6, 2)
    slot = obj.Neuron("inception_3a/output", None)
    for y, xpos, row, col in [(0.0, 0.0, 0, 0), (0.5, 0.5, 2, 3), (1.0, 1.0, 3, 5),
                              (0.26, 0.84, 1, 5)]:
        term = obj.Neuron("inception_3a/output", 1, y, xpos)
        traced = jax.jit(lambda a: slot.fill(a)({"inception_3a/output": x}, {}))(term.arrays())
        assert float(traced) == float(x[row, col, 1]) == float(term({"inception_3a/output": x}, {}))


# --- the parser's bounds: length, term count, numbers ---

def test_parsing_checks_each_term_once(monkeypatch):
    calls = []
    check = obj.Channel.check
    monkeypatch.setattr(obj.Channel, "check", lambda self: calls.append(1) or check(self))
    n = 400
    parsed = obj.parse(" + ".join(f"0.5*channel(inception_3a/output,{i % 256})" for i in range(n)))
    assert len(parsed.terms) == n and len(calls) == n


def test_the_largest_objective_parses_quickly():
    n = obj.MAX_TERMS
    text = " - ".join(f"0.25*neuron(inception_4c/output,{i % 512},0.125,0.75)" for i in range(n))
    start = time.perf_counter()
    assert len(obj.parse(text).terms) == n
    assert time.perf_counter() - start < 5.0  # was ~40 s for 5,000 terms (quadratic)


@pytest.mark.parametrize("text,message", [
    ("x" * (parser.MAX_TEXT + 1), "at most 100,000"),
    (" + ".join(["tv()"] * (obj.MAX_TERMS + 1)), f"at most {obj.MAX_TERMS} terms"),
    ("1e39*channel(inception_4c/output,1)", "outside float32's range"),
    ("1e-46*channel(inception_4c/output,1)", "underflows float32"),
    ("1e300*inception_4c/output", "outside float32's range"),
    ("direction(inception_3a/output,3:1e39)", "outside float32's range"),
    ("class(99999999999999999999999)", "class 99999999999999999999999 out of range"),
    ("class(2147483648)", "out of range"),
    ("channel(inception_4c/output,99999999999999999999999)", "out of range"),
    ("neuron(inception_4c/output,99999999999999999999)", "out of range"),
    ("direction(inception_3a/output,99999999999999999999:1)", "out of range"),
    ("channel(inception_4c/output," + "9" * 5000 + ")", "expected an integer"),
])
def test_out_of_bounds_objectives_are_one_line_errors(text, message):
    with pytest.raises(ObjectiveError, match=re.escape(message)) as info:
        obj.parse(text)
    assert "\n" not in str(info.value) and len(str(info.value)) < 2000


def test_algebra_checks_weights_in_float32():
    o = obj.channel("inception_4c/output", 1)
    for scale, message in [(1e30, "outside float32's range"), (1e-30, "underflows")]:
        with pytest.raises(ObjectiveError, match=message):
            scale * (scale * o)
    assert (0 * o).weights == (0.0,)  # an explicit zero is not an underflow
    with pytest.raises(ObjectiveError, match="out of range"):
        obj.class_logit(2**63)


def test_weights_print_exactly():
    o = 0.1234567891 * obj.layer("inception_4c/output") - (1 / 3) * obj.tv()
    assert obj.parse(str(o)) == o
    assert str(2 * obj.tv()) == "2*tv()"
