"""Owns reading trained weights back out of an exported ONNX graph into a torch model (``--init-from``'s core).

The exporters (``dawsep/train/export/``) trace the same modules this package trains, with the legacy exporter
at opset 17, so an ONNX graph holds every trained tensor, under one of these forms (all seen in
the shipped ``dawsep/models/*.onnx``):

- **By name**: ``enc.0.tdf.net.1.running_mean``, ``head.weight``, ... (``state_dict`` keys).
- **Conv + BatchNorm folded** into one Conv with a bias (``onnx::Conv_N``): the BatchNorm's
  parameters are gone. The Conv takes the folded weight, its own bias (if any) zero, and the
  BatchNorm becomes the identity with the folded bias as its shift (running mean 0, running var
  ``1 - eps``, weight 1): the same function in eval mode, exactly. :func:`calibrate_folded` then
  moves the BatchNorm's scale/shift to statistics measured on data, still exact in eval mode,
  so that training mode (batch statistics) starts near the same function too.
- **Linear as MatMul** (``onnx::MatMul_N``, ``[in, out]`` = ``weight.T``); its bias by name.
- **GRU** (``onnx::GRU_N``): W ``[dirs, 3h, in]``, R ``[dirs, 3h, h]``, B ``[dirs, 6h]`` = (Wb, Rb),
  gates z, r, h; torch stores r, z, n per direction (``*_reverse`` for the backward one).
  ``linear_before_reset=1`` is torch's formulation, so the biases map one to one.
- **LSTM** (``onnx::LSTM_N``): the same layout with gates i, o, f, c (torch: i, f, g, o); a
  multi-layer LSTM is one ONNX node per layer, in graph order.
- **GroupNorm** as Mul/Add with ``[C, 1]`` constants (``onnx::Mul_N``/``onnx::Add_N``) and **PReLU**
  slopes reshaped to ``[1, 1]`` (Conv-TasNet).

Each tensor is placed by what its consuming node does in the module the node's name scopes
(``/enc.0/tfc/layers.0/layers.0.0/Conv`` -> ``enc.0.tfc.layers.0.0``), not by its name alone: the
exporter stores equal tensors once (e.g. untrained BatchNorm weights) and hands the other names
back through Identity nodes. What no node role covers (Open-Unmix's ``input_mean``) is matched
by name. Every tensor is shape-checked. A ``state_dict`` entry left unfilled, or an initializer
left unused, raises :class:`InitFromError` listing them: a model is never half-initialised with
random weights. The one exception is a parameter no output depends on (no gradient reaches it,
e.g. the residual conv of Conv-TasNet's last block), which the exporter prunes: it stays as built,
is reported in :class:`Loaded`, and training never changes it either.

Which model to build, and from which file, is :mod:`dawsep.train.init_from`'s.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dawsep.errors import ModelError

_SKIP = ("num_batches_tracked",)  # BatchNorm's step counter: not a weight, not in any export


class InitFromError(ModelError):
    """``--init-from`` cannot fill the model from the file (names the file and what is missing)."""


# ------------------------------------------------------------------ ONNX -> state_dict
def _gates(a: np.ndarray, order: list[int]) -> np.ndarray:
    """Reorder the gate blocks along axis 0 (``len(order)`` equal blocks)."""
    return np.concatenate([np.split(a, len(order))[i] for i in order])


_GRU_ORDER = [1, 0, 2]      # torch r, z, n  <-  ONNX z, r, h
_LSTM_ORDER = [0, 2, 3, 1]  # torch i, f, g, o  <-  ONNX i, o, f, c


def _resolve(scope: list[str], modules: dict[str, nn.Module]) -> str | None:
    """Module path of an exporter scope: each part names a module relative to one of its
    ancestors in the scope (``/enc.0/tfc/layers.0/layers.0.0`` -> ``enc.0.tfc.layers.0.0``).
    A module that calls a grandchild directly names it by its last attribute only; such a
    module declares ``onnx_scope_aliases`` (``{"tfc": "enc.0.tfc"}``, relative to itself)."""
    stack = [""]
    for part in scope:
        for base in reversed(stack):
            cand = f"{base}.{part}" if base else part
            if cand in modules:
                stack.append(cand)
                break
            alias = getattr(modules.get(base) if base else modules.get(""), "onnx_scope_aliases", {}).get(part)
            if alias and (f"{base}.{alias}" if base else alias) in modules:
                stack.append(f"{base}.{alias}" if base else alias)
                break
        else:
            return None
    return stack[-1] if len(stack) > 1 else None


def _folded_batchnorms(model: nn.Module, example: torch.Tensor) -> dict[str, str]:
    """``{conv path: batchnorm path}`` for every BatchNorm fed directly by a Conv (what the exporter
    folds), found by running ``example`` through ``model`` with hooks."""
    names = {m: n for n, m in model.named_modules()}
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: dict[str, str] = {}

    def conv_hook(mod, _inp, out):
        produced[id(out)] = (names[mod], out)  # keep ``out`` alive so its id stays unique

    def bn_hook(mod, inp, _out):
        src = produced.get(id(inp[0]))
        if src is not None and src[1] is inp[0]:
            pairs[src[0]] = names[mod]

    hooks = [m.register_forward_hook(conv_hook if isinstance(m, nn.modules.conv._ConvNd) else bn_hook)
             for m in model.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm))]
    was = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    return pairs


def _dead_parameters(model: nn.Module, example: torch.Tensor) -> set[str]:
    """Parameters no output depends on (no gradient reaches them), e.g. the residual conv of
    Conv-TasNet's last block: the exporter prunes them, and training never changes them."""
    was = model.training
    saved = {n: p.grad for n, p in model.named_parameters()}
    try:
        model.eval()
        model.zero_grad(set_to_none=True)
        with torch.enable_grad():  # whatever the caller's mode
            out = model(example)
            sum(o.sum() for o in (out if isinstance(out, (tuple, list)) else (out,))).backward()
        return {n for n, p in model.named_parameters() if p.grad is None}
    finally:
        for n, p in model.named_parameters():
            p.grad = saved[n]
        model.train(was)


@dataclass
class Loaded:
    """What :func:`onnx_state_dict` did beyond copying by name."""

    folded: list[str] = field(default_factory=list)  # BatchNorms folded into their Conv (identity now)
    dead: list[str] = field(default_factory=list)    # parameters no output depends on: left as built
    grown: list[str] = field(default_factory=list)   # new parameters of a grown config: left as built (a no-op)


def onnx_state_dict(model: nn.Module, path: str, example: torch.Tensor) -> tuple[dict[str, torch.Tensor], Loaded]:
    """``(state_dict, Loaded)`` for ``model`` from the initializers of ``path``.

    ``example`` is any valid input of ``model`` (run once, to see which BatchNorms follow a Conv and
    which parameters reach no output). Raises :class:`InitFromError` listing the ``state_dict``
    entries it could not fill, the initializers it could not place, and any shape mismatch. Only a
    parameter that reaches no output may be absent from the graph (the exporter drops it); the
    returned state_dict then leaves it out.
    """
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(path)
    # an initializer that is also a graph input is an optional input's default (``stem_ids``), not a weight
    inputs = {i.name for i in proto.graph.input}
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer if i.name not in inputs}
    # The exporter stores equal tensors once and gives the other names back through Identity nodes.
    alias = {n.output[0]: n.input[0] for n in proto.graph.node if n.op_type == "Identity" and n.input[0] in inits}
    inits.update({out_name: inits[src] for out_name, src in alias.items()})
    target = {k: v for k, v in model.state_dict().items() if not k.endswith(_SKIP)}
    modules = dict(model.named_modules())
    out: dict[str, np.ndarray] = {}
    used: set[str] = set()
    problems: list[str] = []

    def put(key: str, value: np.ndarray, src: str) -> None:
        if key not in target:
            problems.append(f"{src} -> {key}: no such state_dict entry")
            return
        want = tuple(target[key].shape)
        if value.shape != want:
            if value.size == int(np.prod(want)) and value.squeeze().shape == target[key].squeeze().shape:
                value = value.reshape(want)  # [C, 1] GroupNorm affine, [1, 1] PReLU slope
            else:
                problems.append(f"{src} -> {key}: shape {value.shape}, the model has {want}")
                return
        out[key] = value

    folded = _folded_batchnorms(model, example)  # conv path -> BatchNorm path
    nodes = [(n, _resolve(n.name.split("/")[1:-1], modules)) for n in proto.graph.node]
    bn_in_graph = {p for n, p in nodes if n.op_type == "BatchNormalization"}
    bn_missing = {bn for bn in folded.values() if bn not in bn_in_graph}
    rnn_layer: dict[str, int] = defaultdict(int)
    consumers: dict[str, list[str]] = defaultdict(list)
    # 1. By role: what each node does with its initializers, in the module its scope names. (The
    #    exporter shares one initializer between equal tensors, e.g. untrained BatchNorm weights,
    #    so names alone are not enough.)
    for node, path_ in nodes:
        ins = list(node.input)
        have = [x for x in ins if x in inits]
        if not have:
            continue
        for x in have:
            consumers[x].append(f"{node.op_type} {node.name}")
        mod = modules.get(path_) if path_ else None
        op = node.op_type
        if op == "Identity":
            continue  # an alias (above); its consumers map it
        if op == "BatchNormalization" and isinstance(mod, nn.modules.batchnorm._BatchNorm):
            for key, x in zip(("weight", "bias", "running_mean", "running_var"), ins[1:5]):
                put(f"{path_}.{key}", inits[x], x)
        elif op in ("Conv", "ConvTranspose") and isinstance(mod, nn.modules.conv._ConvNd):
            b = inits.get(ins[2]) if len(ins) > 2 and ins[2] else None
            bn = folded.get(path_)
            if op == "Conv" and bn in bn_missing and b is not None:
                c, eps = len(b), modules[bn].eps
                put(f"{path_}.weight", inits[ins[1]], ins[1])
                if mod.bias is not None:
                    put(f"{path_}.bias", np.zeros_like(b), ins[2])
                put(f"{bn}.weight", np.ones(c, np.float32), ins[2])
                put(f"{bn}.bias", b, ins[2])
                put(f"{bn}.running_mean", np.zeros(c, np.float32), ins[2])
                put(f"{bn}.running_var", np.full(c, 1.0 - eps, np.float32), ins[2])
            else:
                put(f"{path_}.weight", inits[ins[1]], ins[1])
                if b is not None:
                    put(f"{path_}.bias", b, ins[2])
        elif op == "MatMul" and isinstance(mod, nn.Linear) and ins[1] in inits:
            put(f"{path_}.weight", inits[ins[1]].T, ins[1])
        elif op == "MatMul" and getattr(mod, "onnx_matmul_transposed", None) and ins[1] in inits:
            put(f"{path_}.{mod.onnx_matmul_transposed}", inits[ins[1]].T, ins[1])  # x @ param.t()
        elif op == "Add" and isinstance(mod, (nn.Linear, nn.GroupNorm)) and len(have) == 1:
            put(f"{path_}.bias", inits[have[0]], have[0])
        elif op == "Mul" and isinstance(mod, nn.GroupNorm) and len(have) == 1:
            put(f"{path_}.weight", inits[have[0]], have[0])
        elif op == "PRelu" and isinstance(mod, nn.PReLU):
            put(f"{path_}.weight", inits[ins[1]], ins[1])
        elif op in ("GRU", "LSTM") and isinstance(mod, (nn.GRU, nn.LSTM)) and type(mod).__name__ == op:
            layer = rnn_layer[path_]
            rnn_layer[path_] += 1
            order = _GRU_ORDER if op == "GRU" else _LSTM_ORDER
            W, R = inits[ins[1]], inits[ins[2]]
            B = inits[ins[3]] if len(ins) > 3 and ins[3] else np.zeros((W.shape[0], 2 * W.shape[1]), np.float32)
            if W.shape[0] != (2 if mod.bidirectional else 1):
                problems.append(f"{op} node {node.name!r}: {W.shape[0]} directions, the module has "
                                f"{1 + mod.bidirectional}")
                continue
            for d in range(W.shape[0]):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                wb, rb = np.split(B[d], 2)
                put(f"{path_}.weight_ih{sfx}", _gates(W[d], order), ins[1])
                put(f"{path_}.weight_hh{sfx}", _gates(R[d], order), ins[2])
                put(f"{path_}.bias_ih{sfx}", _gates(wb, order), ins[3] or "B")
                put(f"{path_}.bias_hh{sfx}", _gates(rb, order), ins[3] or "B")
        else:
            continue  # e.g. a module's own Parameter used in plain arithmetic: matched by name below
        used.update(have)
    # 2. By name: state_dict entries no node role covered (Open-Unmix's input_mean/input_scale).
    for key in sorted(set(target) - set(out)):
        if key in inits:
            put(key, inits[key], key)
            used.add(key)

    dead = sorted(_dead_parameters(model, example) & (set(target) - set(out)))
    unfilled = sorted(set(target) - set(out) - set(dead))
    used |= {alias[u] for u in used if u in alias}
    unused = sorted(set(inits) - used)
    if problems or unfilled or unused:
        msg = [f"{path}: cannot initialise {type(model).__name__} from this graph"]
        if unfilled:
            msg.append(f"state_dict entries not found ({len(unfilled)}): {', '.join(unfilled)}")
        if unused:
            msg.append(f"initializers not placed ({len(unused)}): "
                       + ", ".join(f"{u} (fed to {'; '.join(consumers[u][:2]) or 'nothing'})" for u in unused))
        msg += problems
        raise InitFromError("\n  ".join(msg))
    state = {k: torch.tensor(np.asarray(v, dtype=np.float32)).to(target[k].dtype) for k, v in out.items()}
    return state, Loaded(folded=sorted(bn_missing), dead=dead)


class _ExportView(nn.Module):
    """The module tree a conditioned separator is exported under (``export/separator.py``'s
    ``_StemSelect``: every tensor and scope of its graph is named under ``model.``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, mix: torch.Tensor) -> torch.Tensor:
        return self.model(mix)


def load_onnx_weights(model: nn.Module, path: str, example: torch.Tensor) -> Loaded:
    """Fill ``model`` in place from ``path`` (see :func:`onnx_state_dict`)."""
    if getattr(model, "conditioned", False):
        info = load_onnx_weights(_ExportView(model), path, example)
        return Loaded(folded=[n.removeprefix("model.") for n in info.folded],
                      dead=[n.removeprefix("model.") for n in info.dead])
    state, info = onnx_state_dict(model, path, example)
    missing, unexpected = model.load_state_dict(state, strict=False)
    left = [k for k in missing if not k.endswith(_SKIP) and k not in info.dead]
    if left or unexpected:  # onnx_state_dict already checked; this guards the invariant
        raise InitFromError(f"{path}: state_dict mismatch, missing {left}, unexpected {unexpected}")
    return info


# ------------------------------------------------------------------ folded BatchNorm calibration
@torch.no_grad()
def calibrate_folded(model: nn.Module, folded: list[str], inputs) -> None:
    """Give each folded BatchNorm (identity after :func:`load_onnx_weights`) the per-channel mean
    ``mu`` and std ``sigma`` of its input over ``inputs`` (an iterable of model inputs):
    running stats ``(mu, sigma^2 - eps)``, weight ``sigma``, bias ``bias + mu``. The eval-mode
    function is unchanged; in training mode the batch statistics then roughly cancel instead of
    re-scaling every channel to unit variance (which the folded graph no longer knew about)."""
    if not folded:
        return
    mods = dict(model.named_modules())
    acc: dict[str, list] = {n: [0.0, 0.0, 0] for n in folded}

    def hook(name):
        def f(mod, inp, _out):
            x = inp[0].transpose(0, 1).reshape(inp[0].shape[1], -1).double()
            a = acc[name]
            a[0] = a[0] + x.sum(1)
            a[1] = a[1] + x.pow(2).sum(1)
            a[2] += x.shape[1]
        return f

    hooks = [mods[n].register_forward_hook(hook(n)) for n in folded]
    was = model.training
    model.eval()
    try:
        for x in inputs:
            model(x)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    for n in folded:
        s, s2, count = acc[n]
        if not count:
            raise InitFromError(f"calibration never reached BatchNorm {n}")
        bn = mods[n]
        mu = s / count
        var = (s2 / count - mu.pow(2)).clamp_min(0.0) + bn.eps  # what training-mode BN divides by
        sigma = var.sqrt()
        bn.bias.copy_((bn.bias.double() + mu).float())
        bn.weight.copy_(sigma.float())
        bn.running_mean.copy_(mu.float())
        bn.running_var.copy_((var - bn.eps).float())


__all__ = ["InitFromError", "Loaded", "calibrate_folded", "load_onnx_weights", "onnx_state_dict"]
