"""classify: labels, feature models (saved without pickle), grouped validation, ablation, statistics,
drift QC and the classify train/predict command on measured synthetic images."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sstats

from nucleoscope import InputError
from nucleoscope.classify.ablation import ablation_table
from nucleoscope.classify.drift import image_set_drift
from nucleoscope.classify.labels import attach_labels, read_labels
from nucleoscope.classify.linear import FeatureClassifier
from nucleoscope.classify.stats import compare_classes
from nucleoscope.classify.table import feature_columns_of, feature_group, feature_matrix
from nucleoscope.classify.validation import cross_validate, grouped_folds, image_scores


def _blobs(n_images=12, per_image=30, shift=3.0, n_feat=6, seed=0):
    """Nuclei of two classes by image; feature 0 differs by ``shift`` SDs, the rest is noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_images):
        c = "A" if i % 2 == 0 else "B"
        X = rng.normal(size=(per_image, n_feat))
        X[:, 0] += shift * (c == "B")
        for x in X:
            rows.append({"ImageName": f"im{i:02d}", "Class": c, "Group": f"im{i:02d}", **{f"f{j}": v for j, v in enumerate(x)}})
    df = pd.DataFrame(rows)
    df["ObjectNumber"] = df.groupby("ImageName").cumcount() + 1
    return df, df[[f"f{j}" for j in range(n_feat)]].to_numpy().copy()


# -- labels ------------------------------------------------------------------------------------------
def test_read_labels_per_image_and_per_nucleus(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("ImageName,line,plate\n01,HepG2,p1\n02,Huh7,p1\n03,Huh7,p2\n")
    lab = read_labels(p)
    assert not lab.per_nucleus and lab.classes == ["HepG2", "Huh7"] and lab.class_column == "line"
    assert list(lab.table["Group"]) == ["01", "02", "03"] and list(lab.table["plate"]) == ["p1", "p1", "p2"]
    lab = read_labels(p, group_column="plate")
    assert list(lab.table["Group"]) == ["p1", "p1", "p2"]
    q = tmp_path / "n.csv"
    q.write_text("ImageName,ObjectNumber,phase\na,1,G1\na,2,S\nb,1,G1\n")
    lab = read_labels(q)
    assert lab.per_nucleus and list(lab.table["ObjectNumber"]) == [1, 2, 1]


@pytest.mark.parametrize("text, problem", [
    ("Image,class\n1,a\n2,b\n", "ImageName"),
    ("ImageName,class\n1,a\n2,a\n", "two classes"),
    ("ImageName,class\n1,a\n1,b\n2,b\n", "different classes"),
    ("ImageName,class\n1,a\n2,\n", "empty"),
    ("ImageName,ObjectNumber,class\n1,x,a\n2,1,b\n", "ObjectNumber"),
])
def test_read_labels_errors_name_the_file(tmp_path, text, problem):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(InputError, match=problem) as e:
        read_labels(p)
    assert "bad.csv" in str(e.value)


def test_attach_labels_drops_unlabelled_and_names_missing_images(tmp_path):
    p = tmp_path / "l.csv"
    p.write_text("ImageName,class\na,x\nb,y\n")
    nuclei = pd.DataFrame({"ImageName": ["a", "a", "b", "c"], "ObjectNumber": [1, 2, 1, 1], "AreaShape_Area": [1, 2, 3, 4]})
    out = attach_labels(nuclei, read_labels(p))
    assert list(out["ImageName"]) == ["a", "a", "b"] and list(out["Class"]) == ["x", "x", "y"]
    p.write_text("ImageName,class\na,x\nzz,y\n")
    with pytest.raises(InputError, match="zz"):
        attach_labels(nuclei, read_labels(p))


def test_feature_columns_skip_location_orientation_and_um_copies():
    t = pd.DataFrame({c: [1.0] for c in ["Location_Center_X", "AreaShape_Area", "AreaShape_Area_um2",
                                         "AreaShape_Orientation", "AreaShape_BoundingBoxMinimum_X",
                                         "Texture_LBP_r1_u0", "Chromatin_HCEC", "QC_Flagged"]})
    assert feature_columns_of(t) == ["AreaShape_Area", "Texture_LBP_r1_u0", "Chromatin_HCEC"]
    assert feature_group("Texture_LBP_r1_u0") == "lbp" and feature_group("AreaShape_Area") == "shape"
    t.loc[0, "AreaShape_Area"] = np.inf
    X, cols = feature_matrix(t)
    assert np.isnan(X[0, 0])
    with pytest.raises(InputError, match="Texture_Zernike"):
        feature_matrix(t, ["Texture_Zernike_n1_m1"])


# -- models ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["logreg", "svm", "forest"])
def test_feature_models_learn_and_round_trip_through_json(kind):
    df, X = _blobs(shift=4.0)
    y = df["Class"].to_numpy()
    X[3, 2] = np.nan  # imputed with the training median
    tr = df["ImageName"] < "im08"
    m = FeatureClassifier(kind, n_search=2).fit(X[tr], y[tr], groups=df["ImageName"][tr])
    acc = (m.predict(X[~tr]) == y[~tr]).mean()
    assert acc > 0.9, acc
    back = FeatureClassifier.from_dict(json.loads(json.dumps(m.to_dict())))
    np.testing.assert_array_equal(back.predict_proba(X), m.predict_proba(X))
    assert np.allclose(m.predict_proba(X).sum(1), 1)


def test_array_models_equal_scikit_learn():
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    df, X = _blobs(shift=1.0)
    y = df["Class"].to_numpy()
    m = FeatureClassifier("logreg").fit(X, y)
    Z = (X - X.mean(0)) / X.std(0)
    ref = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000).fit(Z, y)
    np.testing.assert_allclose(m.predict_proba(X), ref.predict_proba(Z), atol=1e-6)
    f = FeatureClassifier("forest", n_search=1).fit(X, y)
    rf = RandomForestClassifier(100, max_depth=8, class_weight="balanced", random_state=0).fit(Z, y)
    np.testing.assert_allclose(f.predict_proba(X), rf.predict_proba(Z), atol=1e-12)


@pytest.mark.parametrize("kind", ["logreg", "svm"])
def test_auto_C_is_chosen_on_grouped_inner_folds(kind):
    """Few nuclei, one informative feature among 60 noise features: the inner search regularises harder
    than C = 1, records every C's inner score, and the choice survives the JSON round trip."""
    from nucleoscope.classify.linear import C_GRID

    df, X = _blobs(n_images=8, per_image=6, shift=1.5, n_feat=61, seed=2)
    y, g = df["Class"].to_numpy(), df["Group"].to_numpy()
    m = FeatureClassifier(kind, C="auto").fit(X, y, groups=g)
    search = m.params_["search"]
    assert set(search["scores"]) == {str(c) for c in C_GRID}
    best = search["best"]["C"]
    assert search["score"] == max(search["scores"].values()) and best < 1.0
    ref = FeatureClassifier(kind, C=best).fit(X, y)
    np.testing.assert_allclose(m.predict_proba(X), ref.predict_proba(X), atol=1e-9)
    back = FeatureClassifier.from_dict(json.loads(json.dumps(m.to_dict())))
    np.testing.assert_allclose(back.predict_proba(X), m.predict_proba(X), atol=1e-12)


def test_unknown_kind_and_wrong_width():
    df, X = _blobs()
    with pytest.raises(InputError, match="unknown model"):
        FeatureClassifier("boost").fit(X, df["Class"])
    m = FeatureClassifier().fit(X, df["Class"])
    with pytest.raises(InputError, match="6 features"):
        m.predict_proba(X[:, :3])


# -- validation --------------------------------------------------------------------------------------
def test_grouped_folds_keep_images_apart_and_test_each_once():
    df, _ = _blobs(n_images=10)
    folds = grouped_folds(df["Class"], df["ImageName"])
    assert len(folds) == 5  # 5 images per class
    seen = []
    for tr, te in folds:
        assert not set(df["ImageName"].iloc[tr]) & set(df["ImageName"].iloc[te])
        seen += list(te)
    assert sorted(seen) == list(range(len(df)))
    with pytest.raises(InputError, match="single image"):
        grouped_folds(["a", "a", "b", "b"], ["1", "1", "2", "3"])


def test_grouped_validation_does_not_leak_image_identity():
    """Each image has its own feature offset and a random class: a model that memorizes images scores
    high when nuclei of one image sit on both sides, and at chance by image-grouped validation."""
    rng = np.random.default_rng(1)
    imgs = np.repeat(np.arange(40), 25)
    cls = np.where(rng.permutation(np.repeat([0, 1], 20))[imgs] == 1, "B", "A")
    X = rng.normal(size=(40, 5))[imgs] * 5 + rng.normal(size=(len(imgs), 5)) * 0.1

    def fp(tr, te):
        return FeatureClassifier("forest", n_search=1).fit(X[tr], cls[tr]).predict_proba(X[te])
    grouped = cross_validate(fp, cls, imgs, imgs)
    assert abs(grouped.nucleus["balanced_accuracy"] - 0.5) < 0.2
    from sklearn.model_selection import StratifiedKFold

    leaky = cross_validate(fp, cls, imgs, imgs, folds=list(StratifiedKFold(5, shuffle=True, random_state=0).split(X, cls)))
    assert leaky.nucleus["balanced_accuracy"] > 0.95


def test_image_scores_average_probabilities():
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.1, 0.9], [0.3, 0.7]])
    s, t = image_scores(proba, ["A", "A", "B", "B"], ["i", "i", "j", "j"], ["A", "B"])
    np.testing.assert_allclose(t["P_A"], [0.55, 0.2])
    assert list(t["Predicted"]) == ["A", "B"] and s["accuracy"] == 1.0 and list(t["Nuclei"]) == [2, 2]


# -- ablation, statistics, drift ----------------------------------------------------------------------
def test_ablation_finds_the_group_that_carries_the_signal():
    df, X = _blobs(shift=3.0, n_feat=4)
    cols = ["AreaShape_Area", "Texture_LBP_r1_u0", "Texture_LBP_r1_u1", "Intensity_MeanIntensity"]
    folds = grouped_folds(df["Class"], df["ImageName"])
    t = ablation_table(lambda: FeatureClassifier("logreg"), X, df["Class"], df["ImageName"], df["ImageName"],
                       cols, folds=folds, per_feature=True)
    row = t.set_index(["Kind", "Removed"])
    assert row.loc[("all", "(none)"), "Nucleus"] > 0.9
    assert row.loc[("group", "shape"), "NucleusDrop"] > 0.3  # without area: chance
    assert abs(row.loc[("group", "lbp"), "NucleusDrop"]) < 0.05
    assert row.loc[("group only", "shape"), "Nucleus"] > 0.9
    assert row.loc[("feature", "AreaShape_Area"), "NucleusDrop"] > 0.3


def test_compare_classes_matches_scipy_and_the_t_formula():
    rng = np.random.default_rng(3)
    a, b = rng.normal(10, 2, 40), rng.normal(11, 2, 60)
    t = pd.DataFrame({"Class": ["A"] * 40 + ["B"] * 60, "ImageName": [f"a{i % 4}" for i in range(40)] +
                      [f"b{i % 5}" for i in range(60)], "Chromatin_HCEC": np.r_[a, b]})
    s = compare_classes(t, ["Chromatin_HCEC"]).set_index("Level")
    sp = np.sqrt((39 * a.var(ddof=1) + 59 * b.var(ddof=1)) / 98)
    t_hand = (a.mean() - b.mean()) / (sp * np.sqrt(1 / 40 + 1 / 60))
    assert s.loc["nucleus", "t"] == pytest.approx(t_hand)
    assert s.loc["nucleus", "p_t"] == pytest.approx(2 * sstats.t.sf(abs(t_hand), 98))
    assert s.loc["nucleus", "p_U"] == pytest.approx(sstats.mannwhitneyu(a, b).pvalue)
    assert s.loc["nucleus", "cohen_d"] == pytest.approx((a.mean() - b.mean()) / sp)
    assert s.loc["image", "n_a"] == 4 and s.loc["image", "n_b"] == 5  # image means: the replicates


def test_drift_flags_the_shifted_image_set_only():
    rng = np.random.default_rng(4)
    rows = []
    for s, shift in (("s1", 0.0), ("s2", 0.0), ("s3", 2.5)):
        for i in range(4):
            for _ in range(30):
                rows.append({"set": s, "img": f"{s}_{i}", "Class": "A", "f": rng.normal() + shift, "g": rng.normal()})
    df = pd.DataFrame(rows)
    d = image_set_drift(lambda: FeatureClassifier("logreg"), df[["f", "g"]].to_numpy(), df["Class"], df["set"],
                        df["img"]).set_index("Set")
    assert bool(d.loc["s3", "Flagged"]) and d.loc["s3", "BalancedAccuracy"] > 0.8
    assert not d.loc["s1", "Flagged"] and not d.loc["s2", "Flagged"]


# -- the command ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def measured_run(tmp_path_factory):
    """Six synthetic fields, small nuclei (class small) vs large (class large), measured from their truth."""
    from nucleoscope.cli import main
    from nucleoscope.io import write_image, write_labels
    from nucleoscope.synth.nuclei import nuclei_field

    root = tmp_path_factory.mktemp("cls")
    (root / "img").mkdir()
    (root / "lab").mkdir()
    lines = ["ImageName,class,plate"]
    for i in range(8):
        big = i % 2 == 1
        s = nuclei_field((256, 256), rng=i, diameter=(26, 30) if big else (14, 17), artifacts=0, coverage=0.25)
        write_image(root / "img" / f"f{i}.tif", s.image)
        write_labels(root / "lab" / f"f{i}.tif", s.labels)
        lines.append(f"f{i},{'large' if big else 'small'},p{i // 4}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    assert main(["measure", str(root / "img"), "--labels", str(root / "lab"), "-o", str(root / "run"), "-q",
                 "--features", "shape"]) == 0
    return root


def test_classify_train_and_predict_end_to_end(measured_run, tmp_path):
    from nucleoscope.cli import main

    r = measured_run
    model = tmp_path / "model"
    assert main(["classify", "train", str(r / "run"), "--labels", str(r / "labels.csv"), "-o", str(model),
                 "--model", "logreg,svm", "--set-column", "plate", "--C", "auto", "-q"]) == 0
    info = json.loads((model / "model.json").read_text())
    assert info["models"]["logreg"]["params"]["search"]["best"]["C"] in (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    assert info["format"] == "nucleoscope-classifier" and info["classes"] == ["large", "small"]
    assert info["validation"]["logreg"]["nucleus"]["balanced_accuracy"] > 0.9
    assert info["validation"]["logreg"]["image"]["balanced_accuracy"] == 1.0
    assert info["training"]["images"] == 8 and "classify train" in info["training"]["command"]
    scores = pd.read_csv(model / "validation" / "scores.csv").set_index("Model")
    assert {"area_only", "logreg", "svm"} <= set(scores.index)
    for f in ("ablation.csv", "stats.csv", "drift.csv", "oof_logreg.csv", "embedding_features.csv"):
        assert (model / "validation" / f).is_file(), f
    html = (model / "report.html").read_text()
    for section in ("Validation", "Confusion", "Feature ablation", "t-SNE", "Class differences", "Image-set QC"):
        assert section in html, section
    out = tmp_path / "pred"
    assert main(["classify", "predict", str(model), str(r / "run"), "-o", str(out)]) == 0
    im = pd.read_csv(out / "image_predictions.csv", dtype={"ImageName": str}).set_index("ImageName")
    truth = {f"f{i}": "large" if i % 2 else "small" for i in range(8)}
    assert (im["Predicted"] == pd.Series(truth)).all()
    pred = pd.read_csv(out / "predictions.csv")
    assert list(pred.columns[:3]) == ["ImageName", "ObjectNumber", "Predicted"]
    assert set(pred.columns) >= {"P_large", "P_small"}
    nuc = pd.read_parquet(r / "run" / "nuclei.parquet")
    assert len(pred) == int((nuc["QC_Flagged"] == 0).sum()) if "QC_Flagged" in nuc else len(nuc)


def test_classify_usage_errors(measured_run, tmp_path, capsys):
    from nucleoscope.cli import main

    r = measured_run
    assert main(["classify", "train", str(tmp_path), "--labels", str(r / "labels.csv"), "-o", str(tmp_path / "m")]) == 2
    assert "not a finished run" in capsys.readouterr().err
    assert main(["classify", "predict", str(tmp_path), str(r / "run"), "-o", str(tmp_path / "p")]) == 2
    assert "model.json" in capsys.readouterr().err
    assert main(["classify", "train", str(r / "run"), "--labels", str(r / "labels.csv"), "-o", str(tmp_path / "m"),
                 "--set-column", "well", "-q"]) == 2
    err = capsys.readouterr().err
    assert "set column 'well'" in err and not (tmp_path / "m" / "validation").exists()  # before any training
    (tmp_path / "f").write_text("")
    assert main(["classify", "predict", str(tmp_path), str(r / "run"), "-o", str(tmp_path / "f")]) == 2
    assert "is a file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["classify", "train", str(r / "run"), "--labels", "x.csv", "-o", "m", "--model", "boost"])


def test_classify_networks_end_to_end(measured_run, tmp_path):
    """cnn and patchnet through the command: crops and patches cut on demand from the run's images,
    saved as safetensors + JSON, their curves and heat-maps in the report, prediction by each."""
    from nucleoscope.cli import main

    r = measured_run
    model = tmp_path / "model"
    assert main(["classify", "train", str(r / "run"), "--labels", str(r / "labels.csv"), "-o", str(model),
                 "--model", "logreg,cnn,patchnet", "--network-folds", "1", "--epochs", "5", "--crop-size", "32",
                 "--input-size", "32", "--patch-size", "7", "--ablation", "none", "-q"]) == 0
    info = json.loads((model / "model.json").read_text())
    assert set(info["networks"]) == {"cnn", "patchnet"}
    for k in ("cnn", "patchnet"):
        assert (model / f"{k}.safetensors").is_file() and (model / f"{k}.json").is_file()
    # size tells the classes apart: the CNN sees it; PatchNet, looking inside nuclei, cannot (so only
    # its files and predictions are checked here; tests/test_classify_networks.py checks it learns texture)
    assert info["validation"]["cnn"]["nucleus"]["balanced_accuracy"] > 0.9
    assert not (model / "checkpoints").exists()  # removed once the model is saved
    html = (model / "report.html").read_text()
    for section in ("Training curves", "PatchNet heat-maps", "t-SNE cnn"):
        assert section in html, section
    assert (model / "validation" / "embedding_cnn.csv").is_file()
    truth = pd.Series({f"f{i}": "large" if i % 2 else "small" for i in range(8)})
    for k in ("cnn", "patchnet"):
        out = tmp_path / f"pred_{k}"
        assert main(["classify", "predict", str(model), str(r / "run"), "-o", str(out), "--model", k]) == 0
        im = pd.read_csv(out / "image_predictions.csv", dtype={"ImageName": str}).set_index("ImageName")
        assert np.allclose(im[["P_large", "P_small"]].sum(axis=1), 1.0) and len(im) == 8
        if k == "cnn":
            assert (im["Predicted"] == truth).all()
