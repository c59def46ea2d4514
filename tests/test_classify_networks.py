"""classify's networks: the crop CNN and PatchNet learn an obvious chromatin difference, PatchNet's
heat-map is exactly its patch decision slid over the nucleus, files round-trip without pickle, and a
killed training resumes from its checkpoint."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nucleoscope import InputError
from nucleoscope.classify._net import apply_reference, nucleus_reference
from nucleoscope.classify.cnn import CNNClassifier
from nucleoscope.classify.patchnet import PatchNetClassifier
from nucleoscope.features import nucleus_patches


@pytest.fixture(scope="module")
def crops():
    """Synthetic nuclei of two classes far apart in heterochromatin fraction (0.03 vs 0.40); every
    third one held out."""
    from nucleoscope.synth.chromatin import chromatin_crops

    s = chromatin_crops(100, rng=0, parameter="hc_fraction", values=(0.03, 0.4), class_names=("open", "dense"),
                        size=64, diameter=(26.0, 34.0))
    y = np.where(np.asarray(s.objects["class"]) == 0, "open", "dense")
    test = np.arange(len(y)) % 3 == 0
    return s.image.astype(np.float32), s.labels.astype(np.int32), y, test


def _patches(img, lab, size=11):
    P, R = [], []
    for i in range(len(img)):
        w = nucleus_patches(img[i], lab[i], size=size, stride=size // 2)
        P.append(w.images)
        R.append(np.full(len(w), i))
    return np.concatenate(P), np.concatenate(R)


def test_nucleus_reference_maps_background_to_0_and_nucleus_to_1():
    c = np.full((1, 20, 20), 10.0, np.float32)
    m = np.zeros((1, 20, 20), bool)
    m[0, 5:15, 5:15] = True
    c[m] = 50.0
    ref = nucleus_reference(c, m)
    assert ref.tolist() == [[10.0, 50.0]]
    x = apply_reference(c, ref)
    assert np.allclose(x[m], 1.0) and np.allclose(x[~m], 0.0)


def test_cnn_learns_an_obvious_chromatin_difference(crops, tmp_path):
    img, lab, y, test = crops
    m = lab > 0
    cnn = CNNClassifier(input_size=32, batch_size=8, max_epochs=20)
    cnn.fit(img[~test], y[~test], masks=m[~test])
    assert list(cnn.classes_) == ["dense", "open"]
    acc = (cnn.predict(img[test], masks=m[test]) == y[test]).mean()
    assert acc > 0.9, acc
    h = cnn.history_
    assert len(h) == 20 and cnn.fit_info_["best_epoch"] == 20 and cnn.fit_info_["stopped"] == "max_epochs"
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    emb = cnn.embed(img[:5], masks=m[:5])
    assert emb.shape == (5, cnn.hidden)
    cnn.save(tmp_path / "cnn")
    meta = json.loads((tmp_path / "cnn.json").read_text())
    assert meta["format"] == "nucleoscope-crop-cnn" and len(meta["history"]) == len(h)
    back = CNNClassifier.load(tmp_path / "cnn")
    assert np.allclose(back.predict_proba(img[test], masks=m[test]), cnn.predict_proba(img[test], masks=m[test]),
                       atol=1e-6)
    w = tmp_path / "cnn.safetensors"
    w.write_bytes(w.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(InputError, match="sha|SHA|hash"):
        CNNClassifier.load(tmp_path / "cnn")


def test_patchnet_learns_and_its_heatmap_is_the_patch_decision(crops, tmp_path):
    img, lab, y, test = crops
    P, R = _patches(img, lab)
    ref = nucleus_reference(img, lab > 0)[R]
    tr = ~test[R]
    pn = PatchNetClassifier(patch_size=11, width=8, max_epochs=6)
    pn.fit(P[tr], y[R[tr]], reference=ref[tr])
    g, proba = pn.aggregate(pn.predict_proba(P[~tr], reference=ref[~tr]), R[~tr])
    acc = (pn.classes_[proba.argmax(1)] == y[g]).mean()
    assert acc > 0.9, acc
    # the heat-map at a pixel is the decision on the patch centred there, with the nucleus's own level
    i = int(g[0])
    hm = pn.heatmap(img[i], mask=lab[i] > 0)
    assert hm.shape == (2, 64, 64)
    assert np.isnan(hm[:, lab[i] == 0]).all()
    inside = np.argwhere(np.isfinite(hm[0]))
    yy, xx = inside[len(inside) // 2]
    patch = img[i][yy - 5 : yy + 6, xx - 5 : xx + 6][None]
    direct = pn.predict_proba(patch, reference=nucleus_reference(img[i : i + 1], lab[i : i + 1] > 0))
    assert np.allclose(hm[:, yy, xx], direct[0], atol=1e-5)
    np.testing.assert_allclose(np.nansum(hm, axis=0)[np.isfinite(hm[0])], 1.0, atol=1e-5)
    # filter maps: the top filter of each class is more active on that class's patches
    for c in pn.classes_:
        k = pn.top_filters(c, 1)[0]
        assert pn.filter_scores_[list(pn.classes_).index(c), k] > 0
    fm = pn.filter_maps(img[i], mask=lab[i] > 0)
    assert fm.shape[0] == pn.net_.filters
    # a whole image: each nucleus where its label is
    field = np.zeros((64, 192), np.float32)
    labels = np.zeros((64, 192), np.int32)
    for j, src in enumerate((0, 1, 2)):
        field[:, j * 64 : (j + 1) * 64] = img[src]
        labels[:, j * 64 : (j + 1) * 64] = np.where(lab[src] > 0, j + 1, 0)
    whole = pn.image_heatmap(field, labels)
    assert np.isnan(whole[:, labels == 0]).all() and np.isfinite(whole[0, labels == 2]).mean() > 0.5
    pn.save(tmp_path / "pn")
    back = PatchNetClassifier.load(tmp_path / "pn")
    assert np.allclose(back.heatmap(img[i], mask=lab[i] > 0), hm, equal_nan=True, atol=1e-6)
    assert np.allclose(back.filter_scores_, pn.filter_scores_, atol=1e-4)
    with pytest.raises(InputError, match="patches must be"):
        pn.predict_proba(np.zeros((2, 17, 17), np.float32))
    with pytest.raises(InputError, match="not a nucleoscope-crop-cnn"):
        CNNClassifier.load(tmp_path / "pn")


def test_a_killed_training_resumes_from_its_checkpoint(crops, tmp_path, monkeypatch):
    import nucleoscope.classify._net as net_mod

    img, lab, y, _ = crops
    pick = np.r_[0:12, 100:112]
    P, R = _patches(img[pick], lab[pick])
    sel = np.random.default_rng(0).permutation(len(P))[:256]
    P, yy = P[sel], y[pick][R][sel]
    kw = dict(patch_size=11, width=4, max_epochs=4, batch_size=64, random_state=3)
    straight = PatchNetClassifier(**kw).fit(P, yy)
    ck = tmp_path / "ck"
    real, calls = net_mod.dihedral, {"n": 0}

    def dies_in_epoch_3(x, k):  # 4 batches per epoch: the 9th batch is the first of epoch 3
        calls["n"] += 1
        if calls["n"] == 9:
            raise KeyboardInterrupt
        return real(x, k)
    monkeypatch.setattr(net_mod, "dihedral", dies_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        PatchNetClassifier(**kw, checkpoint_dir=ck).fit(P, yy)
    monkeypatch.setattr(net_mod, "dihedral", real)
    assert json.loads((ck / "last.json").read_text())["epoch"] == 2
    resumed = PatchNetClassifier(**kw, checkpoint_dir=ck).fit(P, yy)
    assert resumed.fit_info_["resumed_from"] == 2 and len(resumed.history_) == 4
    assert [h["train_loss"] for h in resumed.history_] == pytest.approx([h["train_loss"] for h in straight.history_])
    assert np.allclose(resumed.predict_proba(P), straight.predict_proba(P), atol=1e-6)
    # another training (other data) in the same folder does not take the checkpoint
    other = PatchNetClassifier(**kw, checkpoint_dir=ck).fit(P * 2, yy)
    assert other.fit_info_["resumed_from"] == 0
