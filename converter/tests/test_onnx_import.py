# SPDX-License-Identifier: Apache-2.0
"""from_onnx on hand-built ONNX graphs: every op mapping, pattern and error path.

Each graph's expected output is computed here with numpy from the same weights; the converted
graph is evaluated by the float64 reference interpreter.
"""
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import rel_err, velocity
from siflow_convert import ConversionError, from_onnx

RNG = np.random.default_rng(7)
D = 3
Y = RNG.normal(size=(6, D))
T = 0.37


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr, dtype=np.float32), name)


def _f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def make(nodes, inits=(), out="v", out_width=D, t_shape=("B", 1), x_name="x", t_name="t",
         x_width=D, opset=17, extra_inputs=()):
    """An ONNX model with inputs x [B, x_width] and t (shape t_shape), one output."""
    def vi(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))
    inputs = [vi(x_name, ("B", x_width))]
    if t_shape is not None:
        inputs.append(vi(t_name, t_shape))
    inputs += [vi(n, s) for n, s in extra_inputs]
    g = helper.make_graph(nodes, "net", inputs, [vi(out, ("B", out_width))], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def check(model, want_fn, rel=1e-5, **kw):
    g = from_onnx(model, **kw)
    g.widths()
    got = velocity(g, T, Y)
    want = want_fn(Y, np.full((len(Y), 1), T))
    assert got.shape == want.shape
    assert rel_err(got, want) <= rel, (rel_err(got, want), [n.op for n in g.nodes])
    return g


def concat_xt():
    return helper.make_node("Concat", ["x", "t"], ["h"], axis=-1, name="cat")


# ------------------------------------------------------------------------------ linear layers

@pytest.mark.parametrize("alpha,beta,trans_b", [(1.0, 1.0, 1), (0.5, 2.0, 0), (1.0, 0.0, 1)])
def test_gemm_attributes(alpha, beta, trans_b):
    w = RNG.normal(size=(D, D + 1))
    b = RNG.normal(size=D)
    wt = w if trans_b else w.T
    m = make([concat_xt(), helper.make_node("Gemm", ["h", "W", "b"], ["v"], alpha=alpha,
                                            beta=beta, transB=trans_b, name="gemm")],
             [_init("W", wt), _init("b", b)])
    check(m, lambda y, t: alpha * np.hstack([y, t]) @ _f32(w).T + beta * _f32(b))


def test_gemm_trans_a_is_refused():
    m = make([concat_xt(), helper.make_node("Gemm", ["h", "W"], ["v"], transA=1, name="g1")],
             [_init("W", RNG.normal(size=(D + 1, D)))])
    with pytest.raises(ConversionError, match=r"node 'g1' \(Gemm\).*transA"):
        from_onnx(m)


def test_matmul_add_becomes_one_fc_with_bias():
    w, b = RNG.normal(size=(D + 1, D)), RNG.normal(size=D)
    m = make([concat_xt(), helper.make_node("MatMul", ["h", "W"], ["m"], name="mm"),
              helper.make_node("Add", ["m", "b"], ["v"], name="bias")],
             [_init("W", w), _init("b", b)])
    g = check(m, lambda y, t: np.hstack([y, t]) @ _f32(w) + _f32(b))
    assert [n.op for n in g.nodes] == ["concat", "fc"]
    assert g.nodes[1].bias is not None


# ------------------------------------------------------------------------------ activations

def _sig(x):
    return 1 / (1 + np.exp(-x))


UNARY_CASES = [
    ("Relu", {}, lambda x: np.maximum(x, 0)),
    ("LeakyRelu", {"alpha": 0.2}, lambda x: np.where(x > 0, x, 0.2 * x)),
    ("Elu", {"alpha": 0.5}, lambda x: np.where(x > 0, x, 0.5 * np.expm1(x))),
    ("Elu", {}, lambda x: np.where(x > 0, x, np.expm1(x))),
    ("Selu", {}, lambda x: 1.0507009873554805 * np.where(x > 0, x,
                                                         1.6732632423543772 * np.expm1(x))),
    ("Tanh", {}, np.tanh),
    ("Sigmoid", {}, _sig),
    ("Softplus", {}, lambda x: np.log1p(np.exp(x))),
    ("Sin", {}, np.sin),
    ("Cos", {}, np.cos),
]


@pytest.mark.parametrize("op,attrs,fn", UNARY_CASES, ids=[c[0] + str(c[1]) for c in UNARY_CASES])
def test_unary(op, attrs, fn):
    w = RNG.normal(size=(D, D + 1))
    m = make([concat_xt(), helper.make_node("Gemm", ["h", "W"], ["a"], transB=1, name="fc"),
              helper.make_node(op, ["a"], ["v"], name="act", **attrs)], [_init("W", w)])
    g = check(m, lambda y, t: fn(np.hstack([y, t]) @ _f32(w).T))
    assert g.nodes[-1].op == "unary"


def test_selu_with_other_constants_is_refused():
    m = make([helper.make_node("Selu", ["x"], ["v"], alpha=2.0, name="s")])
    with pytest.raises(ConversionError, match=r"node 's' \(Selu\).*only the defaults"):
        from_onnx(m)


def _const(name, value):
    return helper.make_node("Constant", [], [name], name="c_" + name,
                            value=numpy_helper.from_array(np.asarray(value, np.float32)))


def _gelu(x):
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


GELU_ERF_FORMS = {
    # torch 1.13: x * (erf(x / 1.4142135) + 1) * 0.5
    "torch_div": [_const("s", 1.4142135381698608), helper.make_node("Div", ["x", "s"], ["a"]),
                  helper.make_node("Erf", ["a"], ["e"]), _const("one", 1.0),
                  helper.make_node("Add", ["e", "one"], ["p"]),
                  helper.make_node("Mul", ["x", "p"], ["q"]), _const("h", 0.5),
                  helper.make_node("Mul", ["q", "h"], ["v"])],
    # 0.5 * x first, then * (1 + erf(x * 0.70710678))
    "half_first": [_const("h", 0.5), helper.make_node("Mul", ["h", "x"], ["hx"]),
                   _const("s", 0.7071067811865476), helper.make_node("Mul", ["x", "s"], ["a"]),
                   helper.make_node("Erf", ["a"], ["e"]), _const("one", 1.0),
                   helper.make_node("Add", ["one", "e"], ["p"]),
                   helper.make_node("Mul", ["hx", "p"], ["v"])],
}


@pytest.mark.parametrize("form", sorted(GELU_ERF_FORMS))
def test_gelu_erf_pattern(form):
    g = check(make(GELU_ERF_FORMS[form], opset=13), lambda y, t: _gelu(y))
    assert [(n.op, n.unary) for n in g.nodes] == [("unary", "gelu_erf")]


@pytest.mark.parametrize("cube", ["pow", "mul"])
def test_gelu_tanh_pattern(cube):
    if cube == "pow":
        x3 = [_const("three", 3.0), helper.make_node("Pow", ["x", "three"], ["x3"])]
    else:
        x3 = [helper.make_node("Mul", ["x", "x"], ["x2"]),
              helper.make_node("Mul", ["x2", "x"], ["x3"])]
    nodes = x3 + [_const("k", 0.044715), helper.make_node("Mul", ["x3", "k"], ["kx3"]),
                  helper.make_node("Add", ["x", "kx3"], ["in"]),
                  _const("c", math.sqrt(2 / math.pi)), helper.make_node("Mul", ["c", "in"], ["a"]),
                  helper.make_node("Tanh", ["a"], ["th"]), _const("one", 1.0),
                  helper.make_node("Add", ["th", "one"], ["p"]),
                  helper.make_node("Mul", ["x", "p"], ["q"]), _const("h", 0.5),
                  helper.make_node("Mul", ["q", "h"], ["v"])]
    g = check(make(nodes, opset=13), lambda y, t: _gelu_tanh(y))
    assert [(n.op, n.unary) for n in g.nodes] == [("unary", "gelu_tanh")]


@pytest.mark.parametrize("order", ["x_first", "sig_first"])
def test_silu_pattern(order):
    ins = ["x", "s"] if order == "x_first" else ["s", "x"]
    m = make([helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ins, ["v"])])
    g = check(m, lambda y, t: y * _sig(y))
    assert [(n.op, n.unary) for n in g.nodes] == [("unary", "silu")]


def test_lone_erf_is_refused():
    m = make([helper.make_node("Erf", ["x"], ["e"], name="myerf"),
              helper.make_node("Relu", ["e"], ["v"], name="r")])
    with pytest.raises(ConversionError, match=r"node 'myerf' \(Erf\).*GELU"):
        from_onnx(m)


def test_incomplete_gelu_pattern_is_refused():
    nodes = GELU_ERF_FORMS["torch_div"][:5] + [helper.make_node("Relu", ["p"], ["v"], name="r")]
    with pytest.raises(ConversionError, match=r"node 'r' \(Relu\).*Erf"):
        from_onnx(make(nodes, opset=13))


# ------------------------------------------------------------------------------ structure ops

@pytest.mark.parametrize("axis", [1, -1])
def test_concat_feature_axis(axis):
    w = RNG.normal(size=(D, 2 * D + 1))
    m = make([helper.make_node("Concat", ["t", "x", "x"], ["h"], axis=axis),
              helper.make_node("Gemm", ["h", "W"], ["v"], transB=1)], [_init("W", w)])
    check(m, lambda y, t: np.hstack([t, y, y]) @ _f32(w).T)


def test_concat_batch_axis_is_refused():
    m = make([helper.make_node("Concat", ["x", "x"], ["v"], axis=0, name="cb")])
    with pytest.raises(ConversionError, match=r"node 'cb' \(Concat\).*axis 0"):
        from_onnx(m)


def test_add_mul_sub_div_neg():
    c = RNG.normal(size=D)
    nodes = [helper.make_node("Mul", ["x", "x"], ["a"]),          # tensor * tensor
             helper.make_node("Add", ["a", "x"], ["b"]),          # tensor + tensor
             helper.make_node("Mul", ["b", "t"], ["c"]),          # [B, n] * [B, 1]
             helper.make_node("Sub", ["c", "C"], ["d"]),          # tensor - const row
             _const("k", 4.0), helper.make_node("Div", ["d", "k"], ["e"]),   # / scalar
             helper.make_node("Neg", ["e"], ["f"]),
             _const("two", 2.0), helper.make_node("Sub", ["two", "f"], ["g"]),   # const - tensor
             helper.make_node("Mul", ["g", "two"], ["h"]),         # * scalar constant
             helper.make_node("Sub", ["h", "x"], ["v"])]           # tensor - tensor
    g = check(make(nodes, [_init("C", c)]),
              lambda y, t: (2 + ((y * y + y) * t - _f32(c)) / 4) * 2 - y)
    for n in g.nodes:
        if n.constant is not None:
            assert n.constant.size in (1, D) and not (n.constant.size == 1 and D > 1)


def test_scalar_constant_is_expanded_to_width():
    m = make([_const("k", 3.0), helper.make_node("Add", ["x", "k"], ["v"])])
    g = check(m, lambda y, t: y + 3)
    assert g.nodes[0].constant.shape == (D,)


def test_division_by_a_tensor_is_the_div_op():
    # Format 1.4: x / t with t [B, 1] broadcast over the row (it was refused before).
    m = make([helper.make_node("Div", ["x", "t"], ["v"], name="dv")])
    g = check(m, lambda y, t: y / t)
    assert [n.op for n in g.nodes] == ["div"]


def _ln(x, gamma, beta, eps):
    mu = x.mean(1, keepdims=True)
    var = ((x - mu) ** 2).mean(1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * gamma + beta


def test_layernormalization_opset17():
    gm, bt = RNG.normal(size=D), RNG.normal(size=D)
    m = make([helper.make_node("LayerNormalization", ["x", "g", "b"], ["v"], axis=-1,
                               epsilon=1e-3)], [_init("g", gm), _init("b", bt)])
    g = check(m, lambda y, t: _ln(y, _f32(gm), _f32(bt), 1e-3))
    assert [n.op for n in g.nodes] == ["layernorm"]


@pytest.mark.parametrize("with_affine", [True, False])
def test_layernorm_decomposed_pattern(with_affine):
    gm, bt = RNG.normal(size=D), RNG.normal(size=D)
    nodes = [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[-1]),
             helper.make_node("Sub", ["x", "mu"], ["d"]),
             _const("two", 2.0), helper.make_node("Pow", ["d", "two"], ["d2"]),
             helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
             _const("eps", 1e-5), helper.make_node("Add", ["var", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Div", ["d", "sd"], ["n" if with_affine else "v"])]
    if with_affine:
        nodes += [helper.make_node("Mul", ["n", "g"], ["ng"]),
                  helper.make_node("Add", ["ng", "b"], ["v"])]
    m = make(nodes, [_init("g", gm), _init("b", bt)] if with_affine else [], opset=11)
    want = (lambda y, t: _ln(y, _f32(gm), _f32(bt), _f32(1e-5))) if with_affine else \
        (lambda y, t: _ln(y, 1.0, 0.0, _f32(1e-5)))
    g = check(m, want)
    assert [n.op for n in g.nodes] == ["layernorm"]
    assert (g.nodes[0].gamma is not None) == with_affine


def test_no_op_reshapes():
    nodes = [helper.make_node("Identity", ["x"], ["a"]),
             helper.make_node("Flatten", ["a"], ["b"], axis=1),
             _const("shape", np.array([0, -1])), ]
    nodes[-1] = helper.make_node("Constant", [], ["shape"],
                                 value=numpy_helper.from_array(np.array([0, -1], np.int64)))
    nodes += [helper.make_node("Reshape", ["b", "shape"], ["c"]),
              helper.make_node("Unsqueeze", ["c"], ["d"], axes=[1]),
              helper.make_node("Squeeze", ["d"], ["e"], axes=[1]),
              helper.make_node("Relu", ["e"], ["v"])]
    g = check(make(nodes, opset=11), lambda y, t: np.maximum(y, 0))
    assert len(g.nodes) == 1


def test_reshape_that_is_not_a_no_op_is_refused():
    shape = numpy_helper.from_array(np.array([-1], np.int64), "shape")
    m = make([helper.make_node("Reshape", ["x", "shape"], ["r"], name="rs"),
              helper.make_node("Relu", ["r"], ["v"])], [shape])
    with pytest.raises(ConversionError, match=r"node 'rs' \(Reshape\)"):
        from_onnx(m)


def test_constant_folding_of_initializer_subgraph():
    a, b = RNG.normal(size=(D, D)), RNG.normal(size=(D, D))
    nodes = [helper.make_node("Transpose", ["A"], ["At"], perm=[1, 0]),
             helper.make_node("Add", ["At", "B"], ["S"]),
             _const("two", 2.0), helper.make_node("Mul", ["S", "two"], ["W"]),
             helper.make_node("MatMul", ["x", "W"], ["v"])]
    g = check(make(nodes, [_init("A", a), _init("B", b)]),
              lambda y, t: y @ (2 * (_f32(a).T + _f32(b))))
    assert [n.op for n in g.nodes] == ["fc"]


def _shape_of_batch(prefix="s"):
    """Shape(x) → Gather 0 → Unsqueeze, the batch size as a 1-vector (opset 13 form)."""
    return [helper.make_node("Shape", ["x"], [prefix + "shape"]),
            helper.make_node("Constant", [], [prefix + "zero"],
                             value=numpy_helper.from_array(np.array(0, np.int64))),
            helper.make_node("Gather", [prefix + "shape", prefix + "zero"], [prefix + "B"],
                             axis=0),
            helper.make_node("Constant", [], [prefix + "ax"],
                             value=numpy_helper.from_array(np.array([0], np.int64))),
            helper.make_node("Unsqueeze", [prefix + "B", prefix + "ax"], [prefix + "B1"])]


@pytest.mark.parametrize("t_shape", [(), (1,)])
def test_scalar_time_broadcast_by_expand_and_tile(t_shape):
    w = RNG.normal(size=(D, D + 1))
    one = numpy_helper.from_array(np.array([1], np.int64), "one")
    nodes = _shape_of_batch() + [
        helper.make_node("Concat", ["sB1", "one"], ["target"], axis=0),
        helper.make_node("Expand", ["t", "target"], ["tb"]),            # t → [B, 1]
        helper.make_node("Concat", ["x", "tb"], ["h"], axis=1),
        helper.make_node("Gemm", ["h", "W"], ["v"], transB=1)]
    check(make(nodes, [_init("W", w), one], t_shape=t_shape, opset=13),
          lambda y, t: np.hstack([y, t]) @ _f32(w).T)
    nodes = _shape_of_batch() + [
        helper.make_node("Concat", ["sB1", "one"], ["target"], axis=0),
        helper.make_node("Reshape", ["t", "one"], ["t1"]),
        helper.make_node("Tile", ["t1", "sB1"], ["tr"]),                  # t.repeat(B)
        helper.make_node("Unsqueeze", ["tr", "one"], ["tb"]),
        helper.make_node("ConstantOfShape", ["target"], ["ones"],
                         value=numpy_helper.from_array(np.array([1.0], np.float32))),
        helper.make_node("Mul", ["tb", "ones"], ["tb2"]),                  # * torch.ones(B, 1)
        helper.make_node("Concat", ["tb2", "x"], ["h"], axis=1),
        helper.make_node("Gemm", ["h", "W"], ["v"], transB=1)]
    g = check(make(nodes, [_init("W", w), one], t_shape=t_shape, opset=13),
              lambda y, t: np.hstack([t, y]) @ _f32(w).T)
    assert [n.op for n in g.nodes] == ["concat", "fc"]


@pytest.mark.parametrize("t_shape", [("B", 1), ("B",)])
def test_batched_time_inputs(t_shape):
    nodes = [helper.make_node("Mul", ["x", "t1"], ["v"])]
    if t_shape == ("B",):
        ax = numpy_helper.from_array(np.array([1], np.int64), "ax")
        nodes.insert(0, helper.make_node("Unsqueeze", ["t", "ax"], ["t1"]))
        inits = [ax]
    else:
        nodes.insert(0, helper.make_node("Identity", ["t"], ["t1"]))
        inits = []
    check(make(nodes, inits, t_shape=t_shape, opset=13), lambda y, t: y * t)


@pytest.mark.parametrize("column", ["first", "last"])
def test_time_column(column):
    w = RNG.normal(size=(D, D + 1))
    m = make([helper.make_node("Gemm", ["xt", "W"], ["v"], transB=1)], [_init("W", w)],
             x_name="xt", x_width=D + 1, t_shape=None)
    g = check(m, lambda y, t: (np.hstack([t, y]) if column == "first" else np.hstack([y, t]))
              @ _f32(w).T, time_column=column)
    assert g.nodes[0].op == "concat"
    assert g.nodes[0].inputs == ([1, 0] if column == "first" else [0, 1])


def test_named_inputs():
    m = make([helper.make_node("Mul", ["state", "time"], ["v"])], x_name="state",
             t_name="time")
    check(m, lambda y, t: y * t, x_input="state", time_input="time")


def test_slice_feature_axis():
    inits = [numpy_helper.from_array(np.array(v, np.int64), n)
             for n, v in (("st", [1]), ("en", [3]), ("ax", [1]))]
    m = make([helper.make_node("Slice", ["x", "st", "en", "ax"], ["s"]),
              helper.make_node("Concat", ["s", "t"], ["v"], axis=1)], inits, opset=13)
    check(m, lambda y, t: np.hstack([y[:, 1:3], t]))


# ------------------------------------------------------------------------------ error paths

def test_unsupported_op_names_node_and_op():
    m = make([helper.make_node("Sign", ["x"], ["v"], name="mysign")])
    with pytest.raises(ConversionError) as e:
        from_onnx(m)
    msg = str(e.value)
    assert "node 'mysign' (Sign)" in msg and "not supported" in msg and "Gemm" in msg


def test_shape_mismatch():
    m = make([helper.make_node("Gemm", ["x", "W"], ["v"], transB=1, name="fc1")],
             [_init("W", RNG.normal(size=(D, D + 2)))])
    with pytest.raises(ConversionError, match=r"node 'fc1' \(Gemm\): shape mismatch"):
        from_onnx(m)


def test_broadcast_mismatch():
    m = make([helper.make_node("Add", ["x", "C"], ["v"], name="ad")],
             [_init("C", np.ones(D + 1))])
    with pytest.raises(ConversionError, match=r"node 'ad' \(Add\): shape mismatch"):
        from_onnx(m)


def test_missing_time_input():
    m = make([helper.make_node("Relu", ["x"], ["v"])], t_shape=None)
    with pytest.raises(ConversionError, match="missing time input.*time.column"):
        from_onnx(m)


def test_unknown_input_name():
    m = make([helper.make_node("Mul", ["x", "t"], ["v"])])
    with pytest.raises(ConversionError, match=r"unknown input name 'tau'.*\['x', 't'\]"):
        from_onnx(m, time_input="tau")


def test_nan_weights():
    w = RNG.normal(size=(D, D))
    w[1, 2] = np.nan
    m = make([helper.make_node("Gemm", ["x", "W"], ["v"], transB=1, name="fc")],
             [_init("W", w)])
    with pytest.raises(ConversionError, match=r"initializer 'W' \(used by \['fc'\]\).*NaN"):
        from_onnx(m)


def test_cycle():
    m = make([helper.make_node("Add", ["x", "b"], ["a"], name="n1"),
              helper.make_node("Relu", ["a"], ["b"], name="n2"),
              helper.make_node("Relu", ["a"], ["v"], name="n3")])
    with pytest.raises(ConversionError, match=r"cycle through nodes.*n1.*onnx.checker"):
        from_onnx(m)


def test_missing_initializer():
    m = make([helper.make_node("Gemm", ["x", "W"], ["v"], transB=1, name="fc")])
    with pytest.raises(ConversionError,
                       match=r"node 'fc' \(Gemm\) reads 'W'.*missing initializer"):
        from_onnx(m)


def test_output_with_wrong_width():
    w = RNG.normal(size=(D + 1, D))
    m = make([helper.make_node("Gemm", ["x", "W"], ["v"], transB=1)], [_init("W", w)],
             out_width=D + 1)
    with pytest.raises(ConversionError, match=r"graph output 'v'.*width 4.*\[batch, 3\]"):
        from_onnx(m)


def test_checker_message_is_reported():
    m = make([helper.make_node("Relu", ["x"], ["v"], name="r", bogus=1)])
    with pytest.raises(ConversionError, match="onnx.checker"):
        from_onnx(m)


def test_not_an_onnx_file(tmp_path):
    p = tmp_path / "junk.onnx"
    p.write_bytes(b"\x01\x02garbage")
    with pytest.raises(ConversionError, match="junk.onnx"):
        from_onnx(str(p))


def test_two_inputs_with_unknown_names():
    m = make([helper.make_node("Mul", ["a", "b"], ["v"])], x_name="a", t_name="b")
    with pytest.raises(ConversionError, match="cannot tell x and t apart"):
        from_onnx(m)


def test_custom_domain_is_refused():
    node = helper.make_node("Foo", ["x"], ["v"], name="f", domain="com.example")
    g = helper.make_graph([node], "net", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", D]),
        helper.make_tensor_value_info("t", TensorProto.FLOAT, ["B", 1])],
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, ["B", D])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17),
                                            helper.make_opsetid("com.example", 1)])
    with pytest.raises(ConversionError, match=r"node 'f' \(Foo\).*domain"):
        from_onnx(m)
    assert onnx.checker  # the checker accepted the model; the importer refused it
