"""SinkDequantize: a fused kernel that ends by widening its 8-bit result hands on the 8-bit
tensor; the widening ops move into the epilogue of each kernel that reads it.

FuseOps folds elementwise ops into the group of their producer. A residual add that two
convs feed (ResNet's projection shortcut) is fused into one conv's kernel, so the other conv's
kernel ends with the dequantize of its int8 output, ``(float(q) - z) * s``, and writes that
fp32 tensor, four bytes an element, for the first to read back. After this pass the tensor
between the two kernels is the int8 one, and the dequantize runs in the reader's epilogue: on
ResNet-50's first projection (56x56x256) 0.8 MB written and read instead of 3.2 MB. The ops
and their operands are unchanged, so the values are bit-identical.

Runs on the output of FuseOps, before FuseTIR (``tvmq.tune.fuse``). A tail moves only when
every reader of it is a fused kernel that uses it in its epilogue (elementwise ops after its
anchor op, never the conv itself: the kernels' schedules expect no prologue).
"""

from __future__ import annotations

import collections

import tvm
from tvm import relax

from .graph import dataflow_bindings, op_name, referenced_vars, tir_op_pattern

ELEMENTWISE = 1  # TIR op patterns up to kBroadcast (kElemWise is 0)
NARROW_BITS = 8


@tvm.transform.module_pass(opt_level=0, name="SinkDequantize")
def sink_dequantize(mod: tvm.IRModule, _ctx=None) -> tvm.IRModule:
    """``mod`` (after FuseOps) with each widening tail moved into the kernels that read it."""
    main = mod["main"]
    readers = _readers(main)
    callers = collections.Counter(b.value.op for b in dataflow_bindings(main) if _calls_function(b.value))
    replaced, names = {}, {gv.name_hint for gv in mod.get_global_vars()}
    for binding in dataflow_bindings(main):
        sink = _Sink.of(mod, binding, readers, callers)
        if sink is None or sink.producer in replaced or any(r in replaced for r in sink.readers):
            continue
        replaced[sink.producer] = sink.narrowed_producer()
        for reader in sink.readers:
            replaced[reader] = sink.widening_reader(reader)
    if not replaced:
        return mod
    rewire = _Rewire(mod)
    for old, func in replaced.items():
        rewire.renamed[old] = rewire.builder_.add_func(rewire.builder_.normalize(func),
                                                     _unique(_fused_name(func), names))
    main_var = mod.get_global_var("main")
    rewire.builder_.update_func(main_var, rewire.visit_expr(main))
    functions = {gv: f for gv, f in rewire.builder_.get().functions.items() if gv not in replaced}
    return tvm.IRModule(functions, attrs=mod.attrs)


class _Sink:
    """One producer kernel whose result is its 8-bit value widened by ``tail``, and its readers."""

    def __init__(self, mod, producer, tail: list, readers: dict):
        self.mod, self.producer, self.tail, self.readers = mod, producer, tail, readers

    @classmethod
    def of(cls, mod, binding, readers: dict, callers) -> "_Sink | None":
        call = binding.value
        if not (_calls_function(call) and callers[call.op] == 1 and _primitive(mod[call.op])):
            return None
        tail = _widening_tail(mod, mod[call.op])
        users = readers.get(binding.var, [])
        if not tail or not users:
            return None
        positions = {}
        for user in users:
            if not (_calls_function(user) and callers[user.op] == 1 and _primitive(mod[user.op])):
                return None
            params = [p for p, arg in zip(mod[user.op].params, user.args) if arg.same_as(binding.var)]
            if not all(_read_in_epilogue(mod, mod[user.op], p) for p in params):
                return None
            positions[user.op] = params
        return cls(mod, call.op, tail, positions)

    def narrowed_producer(self) -> relax.Function:
        """The producer returning the 8-bit value the tail started from."""
        func = self.mod[self.producer]
        bindings = dataflow_bindings(func)[:-len(self.tail)]
        start = bindings[-1]
        out = relax.Var(start.var.name, start.var.ty)
        bindings[-1] = relax.VarBinding(out, start.value)
        body = relax.SeqExpr([relax.DataflowBlock(bindings)], out)
        return relax.Function(func.params, body, out.ty, func.is_pure, func.attrs)

    def widening_reader(self, reader) -> relax.Function:
        """``reader`` taking the 8-bit value and widening it just before its first use, as the
        producer did (the epilogue's order where FuseOps itself fuses a residual's dequantize)."""
        func = self.mod[reader]
        params, bindings = list(func.params), dataflow_bindings(func)
        for param in self.readers[reader]:
            narrow = relax.Var(param.name + "_q", self._narrow_ty())
            params[params.index(param)] = narrow
            first = next(i for i, b in enumerate(bindings) if any(v.same_as(param) for v in referenced_vars(b.value)))
            bindings[first:first] = self._tail_from(narrow, param)
        body = relax.SeqExpr([relax.DataflowBlock(bindings)], func.body.body)
        return relax.Function(params, body, func.ret_ty, func.is_pure, func.attrs)

    def _narrow_ty(self):
        return dataflow_bindings(self.mod[self.producer])[-len(self.tail) - 1].var.ty

    def _tail_from(self, source: relax.Var, result: relax.Var) -> list:
        """The tail's bindings reading ``source`` and binding its last value to ``result``."""
        out = []
        for i, binding in enumerate(self.tail):
            var = result if i == len(self.tail) - 1 else relax.DataflowVar(binding.var.name, binding.var.ty)
            call = binding.value
            out.append(relax.VarBinding(var, relax.Call(call.op, [call.args[0], relax.Tuple([source]),
                                                                   *call.args[2:]], call.attrs, call.ty_args)))
            source = var
        return out


def _widening_tail(mod, func: relax.Function) -> list:
    """The trailing bindings of ``func`` that widen an 8-bit value into its result, a chain of
    single-input elementwise ops each read only by the next, or [] if it does not end so."""
    bindings = dataflow_bindings(func)
    if len(func.body.blocks) != 1 or not bindings or not bindings[-1].var.same_as(func.body.body) \
            or _bits(func.ret_ty) <= NARROW_BITS:
        return []
    for i in range(len(bindings) - 1, 0, -1):  # bindings[0], the anchor, stays
        source = _single_elementwise_input(mod, bindings[i].value)
        if source is None or not source.same_as(bindings[i - 1].var) or _uses(bindings, source) != 1:
            return []
        if _bits(source.ty) <= NARROW_BITS:
            return bindings[i:]
    return []


def _uses(bindings: list, var: relax.Var) -> int:
    return sum(any(v.same_as(var) for v in referenced_vars(b.value)) for b in bindings)


def _single_elementwise_input(mod, call) -> relax.Var | None:
    """The one tensor ``call`` reads if it is a call_tir of an elementwise PrimFunc, else None."""
    if not _elementwise_call(mod, call) or len(call.args) != 2 or len(call.args[1].fields) != 1:
        return None
    return call.args[1].fields[0]


def _read_in_epilogue(mod, func: relax.Function, param: relax.Var) -> bool:
    """``param`` is read only by elementwise ops, and not by the function's first op (its anchor)."""
    bindings = dataflow_bindings(func)
    readers = [b.value for b in bindings[1:] if any(v.same_as(param) for v in referenced_vars(b.value))]
    return _uses(bindings, param) == len(readers) > 0 and all(_elementwise_call(mod, call) for call in readers)


def _elementwise_call(mod, call) -> bool:
    return op_name(call) == "relax.call_tir" and tir_op_pattern(mod[call.args[0]]) <= ELEMENTWISE


def _readers(main: relax.Function) -> dict:
    """Each variable of ``main`` to the calls that read it; returned variables read by None."""
    readers = collections.defaultdict(list)
    for binding in dataflow_bindings(main):
        for var in referenced_vars(binding.value):
            readers[var].append(binding.value)
    for var in referenced_vars(main.body.body):
        readers[var].append(None)
    return readers


def _calls_function(call) -> bool:
    return isinstance(call, relax.Call) and isinstance(call.op, tvm.ir.GlobalVar)


def _primitive(func) -> bool:
    return isinstance(func, relax.Function) and func.attrs is not None and "Primitive" in func.attrs


def _bits(ty) -> int:
    return tvm.DataType(str(ty.dtype)).bits


def _fused_name(func: relax.Function) -> str:
    """FuseOps's name for a fused function: ``fused_`` and its PrimFuncs' names."""
    return "_".join(["fused"] + [b.value.args[0].name_hint for b in dataflow_bindings(func)])


def _unique(name: str, taken: set) -> str:
    candidate, n = name, 0
    while candidate in taken:
        n += 1
        candidate = f"{name}{n}"
    taken.add(candidate)
    return candidate


@relax.expr_functor.mutator
class _Rewire(relax.PyExprMutator):
    """``main`` calling the renamed kernels; bindings whose type changed get new variables."""

    def __init__(self, mod):
        super().__init__(mod)
        self.renamed = {}

    def visit_call_(self, call):
        if isinstance(call.op, tvm.ir.GlobalVar) and call.op in self.renamed:
            args = [self.visit_expr(arg) for arg in call.args]  # before typing: a reader's param changed
            return self.builder_.normalize(relax.Call(self.renamed[call.op], args, call.attrs, call.ty_args))
        return super().visit_call_(call)
