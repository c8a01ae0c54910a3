"""ONNX names on Relax variables.

To learn which Relax variable holds which ONNX tensor, the model is imported once with
every float node output added as a graph output (a *probe*); the variables behind the
probes are renamed after their tensors and the probes are dropped again.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto


def float_tensors(model: onnx.ModelProto, exclude: set[str]) -> list[str]:
    """Names of node outputs that shape inference says are float32 tensors."""
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    return [out for node in model.graph.node for out in node.output
            if out and out not in exclude and types.get(out) == TensorProto.FLOAT]


def with_probes(model: onnx.ModelProto, probes: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` with the tensors ``probes`` added as graph outputs."""
    probed = onnx.ModelProto()
    probed.CopyFrom(model)
    infos = {v.name: v for v in model.graph.value_info}
    probed.graph.output.extend(infos[name] for name in probes)
    return probed


def name_tensors(mod, names: list[str], num_outputs: int):
    """Rename the variables behind the probed outputs after their ONNX tensors; drop the probes.

    Returns the module and ``{variable name: ONNX tensor name}``: Relax turns ``.`` into ``_``
    in names (``features.2/Clip`` becomes ``features_2/Clip``), and a clash gets a suffix.
    """
    from tvm import relax

    from ..passes.graph import with_main

    func = mod["main"]
    returned = func.body.blocks[-1].bindings[-1]
    fields = list(returned.value.fields) if isinstance(returned.value, relax.Tuple) else [returned.value]
    rename = {f: n for f, n in zip(fields, names) if isinstance(f, relax.Var)}
    onnx_names = {}

    @relax.expr_functor.mutator
    class Renamer(relax.PyExprMutator):
        def visit_var_binding_(self, binding):
            value = self.visit_expr(binding.value)
            onnx_name = rename.get(binding.var)
            name = binding.var.name if onnx_name is None else _unique(onnx_name.replace(".", "_"), onnx_names)
            new_var = self.builder_.emit(value, name) if isinstance(binding.var, relax.DataflowVar) \
                else self.builder_.emit_output(value, name)
            if onnx_name is not None:
                onnx_names[new_var.name] = onnx_name
            self.set_var_remap(binding.var, new_var)

    named = Renamer(mod).visit_expr(func)
    bindings = named.body.blocks[-1].bindings
    fields = bindings[-1].value.fields if isinstance(bindings[-1].value, relax.Tuple) else [bindings[-1].value]
    builder = relax.BlockBuilder()
    with builder.function("main", named.params, attrs=dict(named.attrs) if named.attrs else None):
        with builder.dataflow():
            for binding in bindings[:-1]:
                builder.emit_normalized(binding)
            kept = list(fields[:num_outputs])
            out = builder.emit_output(relax.Tuple(kept) if num_outputs > 1 else kept[0])
        builder.emit_func_output(out)
    return relax.transform.DeadCodeElimination()(with_main(mod, builder.get()["main"])), onnx_names


def _unique(name: str, taken: dict) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}__{n}"
    return candidate
