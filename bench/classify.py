"""Classification benchmark: HepG2 vs Huh7 (Koyuncu), Jurkat cell-cycle phases (Blasi 2016), a chromatin
sensitivity curve on synthetic crops, and prediction speed. Writes the `classify` section of
docs/benchmarks.md.

Koyuncu: `nucleoscope run` (bundled NuSeT, default features) on the 14 dev images, then
`nucleoscope classify train` with image-grouped folds. Jurkat: each 40x40 DNA tile is one cell; the
nucleus is the Otsu object nearest the tile centre, measured with the default features (no QC: the
tiles are cut around the cell); folds grouped by tile (each tile one cell), scores per experiment.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

sys.path.insert(0, str(Path(__file__).parent))
from _docs import stamp, write_section  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.exists():
    DATA = Path(os.environ.get("NUCLEOSCOPE_DATA", "../shared/data"))
BIN = Path(sys.executable).parent / "nucleoscope"


def koyuncu(tmp: Path, models: str) -> tuple[pd.DataFrame, dict]:
    src = DATA / "koyuncu_hepg2_huh7_hoechst"
    names = pd.read_csv(src / "splits.csv", dtype=str)
    names = names[names["split"] == "train"]["image"].tolist()
    lab = tmp / "koy_labels.csv"
    lab.write_text("ImageName,class\n" + "".join(f"{n},{'HepG2' if int(n) <= 25 else 'Huh7'}\n" for n in names))
    run = tmp / "koy_run"
    t0 = time.perf_counter()
    subprocess.run([str(BIN), "run", str(src / "train" / "images"), "-o", str(run), "--no-overlays", "-q"], check=True)
    t_run = time.perf_counter() - t0
    t0 = time.perf_counter()
    subprocess.run([str(BIN), "classify", "train", str(run), "--labels", str(lab), "-o", str(tmp / "koy_model"),
                    "--model", models, "-q"], check=True)
    t_train = time.perf_counter() - t0
    scores = pd.read_csv(tmp / "koy_model" / "validation" / "scores.csv")
    info = json.loads((tmp / "koy_model" / "model.json").read_text())
    return scores, {"run_s": t_run, "train_s": t_train, "images": len(names), "nuclei": info["training"]["nuclei"],
                    "folds": info["folds"], "model_dir": tmp / "koy_model", "run": run}


def tile_table(dna: np.ndarray) -> pd.DataFrame:
    """Default features of the nucleus of each (40, 40) tile: the Otsu object nearest the centre."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    from nucleoscope.features import measure_nuclei

    rows = []
    c = (np.array(dna.shape[1:]) - 1) / 2
    for k, t in enumerate(dna.astype(np.float32)):
        lab, n = ndi.label(ndi.binary_fill_holes(t > threshold_otsu(t)))
        if n == 0:
            continue
        com = np.array(ndi.center_of_mass(np.ones_like(t), lab, range(1, n + 1)))
        keep = 1 + int(np.argmin(((com - c) ** 2).sum(1)))
        row = measure_nuclei(t, (lab == keep).astype(np.int32), feature_set="default")
        row["Tile"] = k
        rows.append(row)
    return pd.concat(rows, ignore_index=True)


def jurkat(models: tuple[str, ...]) -> tuple[pd.DataFrame, dict]:
    from nucleoscope.classify.table import feature_matrix
    from nucleoscope.classify.train import NucleusData, TrainConfig, train_all
    from nucleoscope.classify.validation import scores

    src = DATA / "blasi2016_jurkat_cellcycle"
    lab = pd.read_csv(src / "labels.csv")
    lab = lab[lab["split"] == "train"]
    parts = []
    t0 = time.perf_counter()
    for stem, g in lab.groupby("file"):
        dna = tifffile.imread(src / "train" / "images" / f"{stem}_dna.tif")
        t = tile_table(dna)
        meta = g.set_index("index").loc[t["Tile"]]
        t["ImageName"] = [f"{stem}_{i}" for i in t["Tile"]]
        t["Class"] = meta["class"].to_numpy()
        t["Experiment"] = meta["experiment"].to_numpy()
        t["Group"] = t["ImageName"]
        parts.append(t)
    table = pd.concat(parts, ignore_index=True)
    t_feat = time.perf_counter() - t0
    X, cols = feature_matrix(table)
    t0 = time.perf_counter()
    res = train_all(NucleusData(table, X, cols), TrainConfig(models=models, ablation="groups", embed=False))
    t_train = time.perf_counter() - t0
    rows = []
    for name, r in res.validation.items():
        row = {"Model": name}
        for e in (None, 1, 2):
            m = np.ones(len(r.y), bool) if e is None else table["Experiment"].to_numpy()[r.index] == e
            s = scores(r.y[m], r.predicted[m], r.classes)
            tag = "all" if e is None else f"E{e}"
            row[f"{tag} acc"] = s["accuracy"]
            row[f"{tag} macro recall"] = s["balanced_accuracy"]
        rows.append(row)
    return pd.DataFrame(rows), {"tiles": len(table), "lost": int(len(lab) - len(table)), "features_s": t_feat,
                                "train_s": t_train, "folds": len(res.folds), "ablation": res.ablation,
                                "classes": table["Class"].value_counts().to_dict()}


def sensitivity(shifts=(0.0, 0.01, 0.02, 0.03, 0.05, 0.08), n=150) -> pd.DataFrame:
    """Accuracy of logistic regression on default features telling hc_fraction 0.08 from 0.08 + shift."""
    from nucleoscope.classify.linear import FeatureClassifier
    from nucleoscope.classify.table import feature_matrix
    from nucleoscope.classify.validation import cross_validate
    from nucleoscope.features import measure_nuclei
    from nucleoscope.synth.chromatin import chromatin_crops

    rows = []
    for d in shifts:
        s = chromatin_crops(n, rng=1, parameter="hc_fraction", values=(0.08, 0.08 + d), class_names=("a", "b"))
        tabs = [measure_nuclei(s.image[i].astype(np.float32), s.labels[i], feature_set="default")
                for i in range(len(s.image))]
        t = pd.concat(tabs, ignore_index=True)
        y = np.asarray(s.objects["class"]).astype(str) if "class" in s.objects else np.repeat(["a", "b"], n)
        X, _ = feature_matrix(t)
        g = np.arange(len(y)).astype(str)

        def fp(tr, te):
            return FeatureClassifier("logreg").fit(X[tr], y[tr]).predict_proba(X[te])
        r = cross_validate(fp, y, g, g)
        rows.append({"hc_fraction shift": d, "logreg accuracy": r.nucleus["accuracy"]})
    return pd.DataFrame(rows)


def predict_speed(model_dir: Path, n: int = 10_000) -> dict:
    from nucleoscope.pipeline.classify import load_model

    info = load_model(model_dir)
    X = np.random.default_rng(0).normal(size=(n, len(info["feature_columns"])))
    out = {}
    for name, m in info["loaded"].items():
        t0 = time.perf_counter()
        m.predict_proba(X)
        out[name] = time.perf_counter() - t0
    return out


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    return ("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n" +
            "\n".join("| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="logreg,svm,forest")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ks, kinfo = koyuncu(tmp, args.models)
        print(ks.to_string(), flush=True)
        speed = predict_speed(kinfo["model_dir"])
        js, jinfo = jurkat(tuple(args.models.split(",")))
        print(js.to_string(), flush=True)
        sens = sensitivity()
        print(sens.to_string(), flush=True)
    keep = ["Model", "NucleusBalancedAccuracy", "ImageBalancedAccuracy", "NucleusAccuracy", "TrainSeconds"]
    abl = jinfo["ablation"]
    abl = abl[abl["Kind"] != "group only"][["Removed", "Kind", "Features", "Nucleus", "NucleusDrop"]]
    md = (f"## Classification (SCENMED §8)\n\n{stamp()}\n\n`python bench/classify.py --models {args.models}`.\n\n"
          f"### HepG2 vs Huh7 (Koyuncu dev split, {kinfo['images']} images, {kinfo['nuclei']} nuclei after QC)\n\n"
          f"`nucleoscope run` (bundled NuSeT, default features, {kinfo['run_s']:.0f} s) then `nucleoscope classify "
          f"train` ({kinfo['train_s']:.0f} s in all, ablation included); {kinfo['folds']} image-grouped folds. "
          "Image = mean probability over its nuclei. Targets: 0.90 per nucleus, 0.95 per image.\n\n"
          + md_table(ks[[c for c in keep if c in ks]]) +
          f"\n### Jurkat cell cycle (Blasi 2016 dev split, DNA channel, {jinfo['tiles']} tiles, "
          f"{jinfo['lost']} without an object)\n\nDefault features of the nucleus of each tile; "
          f"{jinfo['folds']} stratified folds (each tile its own group); features {jinfo['features_s']:.0f} s, "
          f"training {jinfo['train_s']:.0f} s. Classes: {jinfo['classes']}. E1 = Experiment 1 (all 7 classes), "
          "E2 = Experiment 2 (G1 only: its macro recall is G1 recall). Targets: accuracy 0.97, macro recall 0.92.\n\n"
          + md_table(js) + "\nFeature-group ablation (best feature model, nucleus balanced accuracy):\n\n" + md_table(abl) +
          "\n### Chromatin sensitivity (synthetic crops, `synth chromatin`, 150 per class)\n\n"
          "hc_fraction 0.08 vs 0.08 + shift; logistic regression on default features, 7-fold CV.\n\n" + md_table(sens) +
          "\n### Prediction speed (10,000 nuclei, feature models, one process)\n\n" +
          md_table(pd.DataFrame([{"Model": k, "seconds": v} for k, v in speed.items()])))
    write_section("classify", md)


if __name__ == "__main__":
    main()
