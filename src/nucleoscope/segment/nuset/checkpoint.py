"""Training state on disk: the resumable checkpoint (network + optimizer), the folded export of the
best weights, and the weights a fine-tune starts from."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .network import NusetNet

__all__: list[str] = []  # private helpers of train_nuset


def _save_checkpoint(path: Path, net: NusetNet, opt: torch.optim.Optimizer, state: dict) -> None:
    """Write the network's and the optimizer's tensors to ``path`` (safetensors, replaced atomically) and
    ``state`` plus the optimizer's parameter groups to ``path`` with suffix ``.json``."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    osd = opt.state_dict()
    for i, st in osd["state"].items():
        for k, v in st.items():
            tensors[f"opt.{i}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().cpu().contiguous()
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": g["params"]} for g in osd["param_groups"]]
    path.with_suffix(".json").write_text(json.dumps({**state, "param_groups": groups}, indent=1))


def _load_checkpoint(path: Path, net: NusetNet, opt: torch.optim.Optimizer) -> dict:
    """Restore ``net`` and ``opt`` from :func:`_save_checkpoint`'s files; returns the saved ``state``."""
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    state = json.loads(path.with_suffix(".json").read_text())
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ost: dict = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            ost.setdefault(int(i), {})[name] = v
    opt.load_state_dict({"state": ost, "param_groups": state.pop("param_groups")})
    return state


def _export_folded(net: NusetNet, path: Path) -> None:
    """Write ``net`` with batch norm folded into the convolutions (the exported form) to ``path``; ``net``
    is left in training mode."""
    from safetensors.torch import save_file

    folded = net.eval().fold_batchnorm()
    save_file({k: v.detach().cpu().contiguous() for k, v in folded.state_dict().items()}, str(path))
    net.train()


def _load_init(net: NusetNet, init: NusetNet) -> None:
    """Copy ``init``'s weights into ``net`` (same widths); head channels ``init`` lacks start at zero."""
    a, b = net.config, init.config
    if (a.widths, a.rpn_level, a.anchor_scales, a.anchor_ratios) != (b.widths, b.rpn_level, b.anchor_scales,
                                                                      b.anchor_ratios):
        raise ValueError(f"init model architecture {b} does not match {a}")
    sd = {k: v.detach().clone() for k, v in init.state_dict().items()}
    own = net.state_dict()
    for k in ("head.weight", "head.bias"):
        if sd[k].shape != own[k].shape:
            t = torch.zeros_like(own[k])
            n = min(t.shape[0], sd[k].shape[0])
            t[:n] = sd[k][:n]
            if k == "head.bias" and t.shape[0] > n:
                t[n:] = -3.0  # borders are rare: start near probability 0.05
            sd[k] = t
    net.load_state_dict(sd)

