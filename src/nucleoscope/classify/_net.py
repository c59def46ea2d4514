"""What the crop CNN and PatchNet share: the training loop (weighted cross-entropy, Adam, early stopping,
time limit, resumable checkpoints), batched inference, the nucleus intensity reference and the files.

SCENMED (SPEC §8) trains both with class-weighted cross-entropy (weights from the training frequencies),
Adam and early stopping with patience 20; the loop here is that, plus a wall-clock limit so a training
fits a laptop's budget and a checkpoint after every epoch so a killed training resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .._errors import InputError

__all__: list[str] = []  # private helpers of cnn.py and patchnet.py

log = logging.getLogger(__name__)

#: Threads torch trains and runs these small networks with. Their convolutions are too small to share well:
#: on the 2-core reference machine one thread is 1.3x slower than two when the machine is idle, but
#: two threads become 2-25x slower as soon as another process takes a core (OpenMP threads wait on
#: each other), which is the usual case on a desktop. One thread is the predictable choice.
TRAIN_THREADS = 1


def nucleus_reference(crops: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Background and nucleus level of each crop, the two points intensities are mapped to 0 and 1.

    Parameters
    ----------
    crops : (N, S, S) float ndarray
    masks : (N, S, S) bool ndarray
        The crop's own nucleus.

    Returns
    -------
    (N, 2) float32 ndarray
        Column 0: the 25th percentile of the pixels outside the nucleus (the background, robust to
        neighbours filling part of the crop; 0 when the nucleus fills it); column 1: the nucleus's
        mean intensity. Dividing by the nucleus's own level removes exposure and stain differences
        between images, which a classifier must not learn (they separate images, not classes).
    """
    crops = np.asarray(crops, np.float32)
    masks = np.asarray(masks, bool)
    out = np.zeros((len(crops), 2), np.float32)
    for i, (c, m) in enumerate(zip(crops, masks)):
        inside, outside = c[m], c[~m]
        out[i, 0] = np.percentile(outside, 25) if outside.size else 0.0
        out[i, 1] = inside.mean() if inside.size else c.mean()
    return out


NORMALIZE = ("image", "nucleus")


def image_reference(ref: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Replace each window's nucleus level by the median level of its image's nuclei.

    With ``normalize="image"`` a nucleus keeps its brightness relative to the other nuclei of its image
    (twice the DNA after S phase is twice as bright), while exposure and stain differences between
    images are still removed.

    Parameters
    ----------
    ref : (N, 2) float ndarray
        From :func:`nucleus_reference`.
    images : (N,) array
        Image of each window.
    """
    out = np.array(ref, np.float32, copy=True)
    images = np.asarray(images).astype(str)
    for name in np.unique(images):
        sel = images == name
        out[sel, 1] = np.median(ref[sel, 1])
    return out


def check_normalize(normalize: str) -> str:
    if normalize not in NORMALIZE:
        raise InputError(f"normalize must be one of {', '.join(NORMALIZE)}, got {normalize!r}")
    return normalize


def apply_reference(windows: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(windows - background) / (nucleus - background) per window; ``ref`` (N, 2) from
    :func:`nucleus_reference` -> (N, S, S) float32."""
    bg = ref[:, 0, None, None]
    span = np.maximum(ref[:, 1, None, None] - bg, 1e-6)
    return ((np.asarray(windows, np.float32) - bg) / span).astype(np.float32)


def dihedral(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Apply one of the 8 rotations/flips, ``k[i]`` in 0..7, to each (C, H, W) sample of ``x`` (square)."""
    out = torch.empty_like(x)
    for t in range(8):
        sel = k == t
        if sel.any():
            v = torch.rot90(x[sel], t % 4, dims=(2, 3))
            out[sel] = v.flip(3) if t >= 4 else v
    return out


def he_init(net: nn.Module) -> None:
    """He (Kaiming) initialisation of every convolution and linear layer (SPEC §8), biases zero."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0.25, nonlinearity="leaky_relu")  # PReLU starts at 0.25
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def class_weights(y: np.ndarray, k: int) -> torch.Tensor:
    """Inverse training frequencies, normalised to mean 1 over the classes present."""
    counts = np.bincount(y, minlength=k).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / (k * np.maximum(counts, 1)), 0.0)
    return torch.tensor(w, dtype=torch.float32)


@dataclass
class LoopConfig:
    """Settings of :func:`fit_loop`; see the classifiers' docstrings."""

    lr: float
    batch_size: int
    max_epochs: int
    patience: int
    time_limit_s: float | None
    augment: bool
    random_state: int
    checkpoint_dir: str | os.PathLike | None = None
    show_progress: bool = False
    identity: dict = field(default_factory=dict)  # what a checkpoint must match to be resumed


class one_thread:
    """Context: torch at :data:`TRAIN_THREADS` threads inside, the caller's setting restored after."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(TRAIN_THREADS)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


def _forward_batches(net: nn.Module, x: np.ndarray, batch: int, fn=None) -> np.ndarray:
    net.eval()
    outs = []
    with torch.inference_mode(), one_thread():
        for s in range(0, len(x), batch):
            xb = torch.from_numpy(np.ascontiguousarray(x[s : s + batch]))
            outs.append((fn or net)(xb).float().numpy())
    if not outs:
        return np.zeros((0,), np.float32)
    return np.concatenate(outs)


def predict_logits(net: nn.Module, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """Logits of ``net`` (eval mode) on (N, C, H, W) float32 ``x``, in batches."""
    return _forward_batches(net, x, batch)


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _epoch_loss(net: nn.Module, x: np.ndarray, y: np.ndarray, weight: torch.Tensor, batch: int) -> tuple[float, float]:
    """Weighted cross-entropy and balanced accuracy of ``net`` on a held-out set."""
    z = predict_logits(net, x, batch)
    loss = float(nn.functional.cross_entropy(torch.from_numpy(z), torch.from_numpy(y), weight=weight))
    pred = z.argmax(1)
    rec = [float((pred[y == c] == c).mean()) for c in np.unique(y)]
    return loss, float(np.mean(rec))


def _checkpoint_paths(d: Path) -> tuple[Path, Path]:
    return d / "last.safetensors", d / "best.safetensors"


def _identity_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fit_loop(net: nn.Module, x: np.ndarray, y: np.ndarray, xv: np.ndarray | None, yv: np.ndarray | None,
             n_classes: int, cfg: LoopConfig) -> dict:
    """Train ``net`` in place; on return it holds the best weights (lowest validation loss; the last
    ones without a validation set).

    Parameters
    ----------
    net : torch.nn.Module
        (B, C, H, W) -> (B, K) logits.
    x : (N, C, H, W) float32 ndarray
    y : (N,) int64 ndarray
        Class index 0..K-1.
    xv, yv : optional
        Validation set for early stopping (patience ``cfg.patience`` epochs without a lower loss).
    n_classes : int
    cfg : LoopConfig

    Returns
    -------
    dict
        ``history`` (per epoch: train loss, validation loss and balanced accuracy, seconds),
        ``best_epoch``, ``stopped`` (why), ``seconds``, ``resumed_from`` (epoch, 0 when fresh).
    """
    with one_thread():
        return _fit_loop(net, x, y, xv, yv, n_classes, cfg)


def _fit_loop(net: nn.Module, x: np.ndarray, y: np.ndarray, xv: np.ndarray | None, yv: np.ndarray | None,
              n_classes: int, cfg: LoopConfig) -> dict:
    from ..segment.nuset.checkpoint import _load_checkpoint, _save_checkpoint

    torch.manual_seed(cfg.random_state)
    rng = np.random.default_rng(cfg.random_state)
    weight = class_weights(y, n_classes)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    has_val = xv is not None and yv is not None and len(yv) > 0
    state = {"epoch": 0, "history": [], "best_loss": math.inf, "best_epoch": 0, "bad": 0, "seconds": 0.0,
             "key": _identity_key(cfg.identity)}
    best = {k: v.detach().clone() for k, v in net.state_dict().items()}
    ck_dir = Path(cfg.checkpoint_dir) if cfg.checkpoint_dir else None
    resumed = 0
    if ck_dir is not None:
        last, best_path = _checkpoint_paths(ck_dir)
        if last.is_file() and best_path.is_file():
            from safetensors.torch import load_file

            saved = json.loads(last.with_suffix(".json").read_text())
            if saved.get("key") == state["key"]:
                state = _load_checkpoint(last, net, opt)
                best = load_file(str(best_path))
                resumed = state["epoch"]
                # both generators as they were after that epoch: the resumed training is the same training
                rng.bit_generator.state = state.pop("np_rng")
                torch.set_rng_state(torch.tensor(state.pop("torch_rng"), dtype=torch.uint8))
                log.info("resumed from %s at epoch %d", ck_dir, resumed)
            else:
                log.warning("checkpoint in %s is of another training (settings or data differ): starting afresh",
                            ck_dir)
        ck_dir.mkdir(parents=True, exist_ok=True)
    stopped = "max_epochs"
    t_start = time.perf_counter() - state["seconds"]
    bar = None
    if cfg.show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_epochs, initial=state["epoch"], desc="epochs", unit="epoch", leave=False)
    n = len(y)
    yt = torch.from_numpy(y.astype(np.int64))
    while state["epoch"] < cfg.max_epochs:
        if state["bad"] >= cfg.patience and has_val:
            stopped = "early_stopping"
            break
        if cfg.time_limit_s is not None and time.perf_counter() - t_start >= cfg.time_limit_s:
            stopped = "time_limit"
            break
        t0 = time.perf_counter()
        net.train()
        order = rng.permutation(n)
        total, seen = 0.0, 0
        for s in range(0, n, cfg.batch_size):
            idx = order[s : s + cfg.batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            xb = torch.from_numpy(np.ascontiguousarray(x[idx]))
            if cfg.augment:
                xb = dihedral(xb, torch.from_numpy(rng.integers(0, 8, len(idx))))
            loss = nn.functional.cross_entropy(net(xb), yt[idx], weight=weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            seen += len(idx)
        rec = {"epoch": state["epoch"] + 1, "train_loss": total / max(seen, 1)}
        if has_val:
            rec["val_loss"], rec["val_balanced_accuracy"] = _epoch_loss(net, xv, yv, weight, 256)
            if rec["val_loss"] < state["best_loss"] - 1e-6:
                state["best_loss"], state["best_epoch"], state["bad"] = rec["val_loss"], rec["epoch"], 0
                best = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                state["bad"] += 1
        else:
            state["best_epoch"] = rec["epoch"]
            best = {k: v.detach().clone() for k, v in net.state_dict().items()}
        rec["seconds"] = round(time.perf_counter() - t0, 3)
        state["history"].append(rec)
        state["epoch"] += 1
        state["seconds"] = time.perf_counter() - t_start
        if ck_dir is not None:
            from safetensors.torch import save_file

            last, best_path = _checkpoint_paths(ck_dir)
            tmp = best_path.with_suffix(".tmp")
            save_file({k: v.contiguous() for k, v in best.items()}, str(tmp))
            tmp.replace(best_path)
            rngs = {"np_rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state().tolist()}
            _save_checkpoint(last, net, opt, state | rngs)  # last: it names the epoch the best file belongs to
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: round(v, 3) for k, v in rec.items() if k.endswith(("loss", "accuracy"))})
    if bar is not None:
        bar.close()
    net.load_state_dict(best)
    net.eval()
    return {"history": state["history"], "best_epoch": state["best_epoch"], "stopped": stopped,
            "seconds": round(time.perf_counter() - t_start, 2), "resumed_from": resumed}


def save_network(stem: str | os.PathLike, net: nn.Module, meta: dict) -> None:
    """``stem.safetensors`` + ``stem.json`` (``meta`` + SHA-256), atomically (the NuSeT model format)."""
    from ..segment.nuset.weights import save_model

    save_model(stem, net.state_dict(), meta)


def load_network(stem: str | os.PathLike, fmt: str) -> tuple[dict, dict]:
    """Tensors and metadata of a saved network of format ``fmt``, hash-verified.

    Raises
    ------
    InputError
        Missing or corrupted files, or a file of another format (named).
    """
    from ..segment.nuset.weights import load_weights

    stem = Path(stem)
    tensors, meta = load_weights(stem.with_suffix(".json") if stem.suffix != ".json" else stem)
    if meta.get("format") != fmt:
        raise InputError(f"not a {fmt} file (format {meta.get('format')!r})", path=stem.with_suffix(".json"))
    return tensors, meta


class NetClassifier:
    """What the crop CNN and PatchNet share as estimators: class bookkeeping, one training through
    :func:`fit_loop`, the fitted check and the files. A subclass sets :attr:`FORMAT` and :attr:`NAME`
    and defines ``_settings`` (its constructor's arguments) and ``_new_net(k)``."""

    FORMAT = ""
    NAME = ""

    def _set_classes(self, y: np.ndarray, classes) -> np.ndarray:
        """``classes_`` from ``classes`` (default: those in ``y``) -> class index of each of ``y``."""
        self.classes_ = np.unique(y if classes is None else np.asarray(classes))
        if len(self.classes_) < 2:
            raise InputError(f"need at least two classes to train, got {list(self.classes_)}")
        return np.searchsorted(self.classes_, y).astype(np.int64)

    def _train(self, x: np.ndarray, yi: np.ndarray, xv: np.ndarray | None, val_y, raw: np.ndarray) -> None:
        """A new network trained on inputs ``x``; ``raw`` (the windows as given) identifies the data for
        resuming a checkpoint."""
        yv = None if xv is None else np.searchsorted(self.classes_, np.asarray(val_y)).astype(np.int64)
        self.net_ = self._new_net(len(self.classes_))
        ident = self._settings() | {"classes": [str(c) for c in self.classes_], "n": len(yi),
                                    "data": float(np.asarray(raw, np.float64).sum())}
        cfg = LoopConfig(lr=self.lr, batch_size=self.batch_size, max_epochs=self.max_epochs, patience=self.patience,
                         time_limit_s=self.time_limit_s, augment=self.augment, random_state=self.random_state,
                         checkpoint_dir=self.checkpoint_dir, show_progress=self.show_progress, identity=ident)
        info = fit_loop(self.net_, x, yi, xv, yv, len(self.classes_), cfg)
        self.history_ = info.pop("history")
        self.fit_info_ = info | {"n_train": len(yi), "n_val": int(0 if yv is None else len(yv))}

    def _check_fitted(self) -> nn.Module:
        if self.net_ is None:
            raise InputError(f"the {self.NAME} is not trained (call fit or load)")
        return self.net_

    def _extra_meta(self) -> dict:
        """Fitted values beyond the weights that :meth:`save` writes (and :meth:`_restore` reads)."""
        return {}

    def _restore(self, meta: dict) -> None:
        pass

    def save(self, stem: str | os.PathLike) -> None:
        """``stem.safetensors`` + ``stem.json`` (settings, classes, training curve, what the subclass
        adds), atomically."""
        self._check_fitted()
        save_network(stem, self.net_, {"format": self.FORMAT, "version": 1, "settings": self._settings(),
                                       "classes": [str(c) for c in self.classes_], "history": self.history_,
                                       "fit": self.fit_info_, **self._extra_meta()})

    @classmethod
    def load(cls, stem: str | os.PathLike):
        """Read :meth:`save`'s files (hash-verified, no pickle)."""
        tensors, meta = load_network(Path(stem), cls.FORMAT)
        m = cls(**meta["settings"])
        m.classes_ = np.asarray(meta["classes"])
        m.net_ = m._new_net(len(m.classes_))
        m.net_.load_state_dict(tensors)
        m.net_.eval()
        m.history_, m.fit_info_ = meta.get("history", []), meta.get("fit", {})
        m._restore(meta)
        return m
