"""Model files: safetensors + JSON with the weights' SHA-256; loading verifies it and never unpickles."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from nucleoscope import InputError  # noqa: E402
from nucleoscope.models import DEFAULT_NUSET, MODELS_DIR, model_paths, sha256_file  # noqa: E402
from nucleoscope.segment.nuset.weights import load_nuset, load_weights, save_model  # noqa: E402


def test_save_load_roundtrip_and_hash(tmp_path):
    t = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    w, j = save_model(tmp_path / "m", t, {"model": "test", "note": "x"})
    meta = json.loads(j.read_text())
    assert meta["sha256"] == sha256_file(w) and meta["weights_file"] == "m.safetensors" and meta["note"] == "x"
    back, meta2 = load_weights(tmp_path / "m.safetensors")
    assert torch.equal(back["a"], t["a"]) and torch.equal(back["b"], t["b"])
    assert meta2 == meta


def test_tampered_missing_and_unhashed_files_are_refused(tmp_path):
    save_model(tmp_path / "m", {"a": torch.zeros(100)}, {})
    w, j = model_paths(tmp_path / "m")
    raw = bytearray(w.read_bytes())
    raw[-1] ^= 0x01  # one bit in the tensor data
    w.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="SHA-256") as exc:
        load_weights(tmp_path / "m")
    assert str(w) in str(exc.value)  # the message names the file
    meta = json.loads(j.read_text())
    del meta["sha256"]
    j.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="no 'sha256'"):
        load_weights(tmp_path / "m")
    with pytest.raises(InputError, match="not found"):
        load_weights(tmp_path / "absent")


def test_bundled_nuset_v5_is_small_verified_and_documented():
    assert DEFAULT_NUSET == "nuset_v5"
    w, j = model_paths("nuset_v5")
    assert w.parent == MODELS_DIR and w.stat().st_size < 5_000_000
    net, meta = load_nuset()
    assert meta["sha256"] == sha256_file(w)
    for key in ("architecture", "thresholds", "normalization", "training", "validation_during_training"):
        assert key in meta
    assert meta["training"]["wall_time_s_total"] > 0 and "command" in meta["training"]
    assert not net.config.batchnorm and not net.training
    n_params = sum(p.numel() for p in net.parameters())
    assert n_params == sum(int(np.prod(t.shape)) for t in load_weights("nuset_v5")[0].values())
    # the boundary channel, and the thresholds that use it, are part of the bundled model
    assert net.config.boundary and net.head.out_channels == 2
    assert meta["thresholds"]["boundary"] > 0 and meta["thresholds"]["merge"] > 0
    assert meta["training"]["stages"][0]["model"] == "nuset_v2"
    # how it was made: the augmentations, every stage back to nuset_v2, and the model it started from
    assert "ramp" in meta["training"]["command"] and meta["training"]["exported"]["step"] == meta["training"]["steps"]
    assert len(meta["training"]["stages"]) == 4 and "H100" in meta["training"]["stages"][-1]["device"]
    assert meta["training"]["init"]["sha256"] == sha256_file(MODELS_DIR / "ablation" / "nuset_v4.safetensors")
    # the model it replaced stays loadable by path, hash verified
    v4, v4_meta = load_nuset(MODELS_DIR / "ablation" / "nuset_v4")
    assert v4_meta["name"] == "nuset_v4" and v4.config.widths == net.config.widths


def test_bare_name_resolves_only_in_the_package_not_the_working_directory(tmp_path, monkeypatch):
    # a stray nuset_v5.safetensors in the working directory used to replace the bundled model
    save_model(tmp_path / "nuset_v5", {"a": torch.zeros(3)}, {"model": "decoy", "name": "decoy"})
    monkeypatch.chdir(tmp_path)
    w, j = model_paths("nuset_v5")
    assert w == MODELS_DIR / "nuset_v5.safetensors" and j == MODELS_DIR / "nuset_v5.json"
    assert load_nuset("nuset_v5")[1]["name"] == "nuset_v5"
    # the user's file is reached by an explicit path: a directory part or a suffix
    for given in ("./nuset_v5", "nuset_v5.safetensors", "nuset_v5.json", tmp_path / "nuset_v5"):
        w, _ = model_paths(given)
        assert w.resolve() == (tmp_path / "nuset_v5.safetensors").resolve(), given
    assert load_weights("./nuset_v5")[1]["name"] == "decoy"
    with pytest.raises(InputError, match="not found"):
        load_weights("no_such_model")  # a bare name is not looked up in the working directory either


def test_model_identity_is_the_json_of_what_loads(tmp_path):
    from nucleoscope.models import bundled_models, model_identity

    ident = model_identity()
    assert ident == model_identity(DEFAULT_NUSET) and ident["name"] == DEFAULT_NUSET
    assert ident["sha256"] == sha256_file(MODELS_DIR / f"{DEFAULT_NUSET}.safetensors") == load_nuset()[1]["sha256"]
    save_model(tmp_path / "m", {"a": torch.zeros(3)}, {"name": "m", "version": 2, "note": "not identity"})
    assert model_identity(tmp_path / "m") == {"name": "m", "version": 2, "sha256": sha256_file(tmp_path / "m.safetensors")}
    with pytest.raises(InputError, match="not found"):
        model_identity(tmp_path / "absent")
    assert DEFAULT_NUSET in bundled_models()


def test_models_store_imports_neither_torch_nor_the_segmenters():
    import subprocess
    import sys

    code = ("import sys, nucleoscope.models as m; m.model_identity(); m.model_paths('nuset_v5'); "
            "sys.exit(1 if 'torch' in sys.modules or 'nucleoscope.segment' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
