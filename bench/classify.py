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

JURKAT_PATCH = 11  # Jurkat nuclei are ~20 px across in the 40 px tiles
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.exists():
    DATA = Path(os.environ.get("NUCLEOSCOPE_DATA", "../shared/data"))
BIN = Path(sys.executable).parent / "nucleoscope"


def koyuncu(tmp: Path, models: str, net_args: list[str]) -> tuple[pd.DataFrame, dict]:
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
                    "--model", models, "-q", *net_args], check=True)
    t_train = time.perf_counter() - t0
    scores = pd.read_csv(tmp / "koy_model" / "validation" / "scores.csv")
    info = json.loads((tmp / "koy_model" / "model.json").read_text())
    return scores, {"run_s": t_run, "train_s": t_train, "images": len(names), "nuclei": info["training"]["nuclei"],
                    "folds": info["folds"], "model_dir": tmp / "koy_model", "run": run}


def tile_table(dna: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """Default features of the nucleus of each (40, 40) tile: the Otsu object nearest the centre; and
    that object's mask per measured tile."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    from nucleoscope.features import measure_nuclei

    rows, masks = [], []
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
        masks.append(lab == keep)
    return pd.concat(rows, ignore_index=True), np.stack(masks)


def jurkat(models: tuple[str, ...], epochs: int, network_folds: int | None) -> tuple[pd.DataFrame, dict]:
    from nucleoscope.classify.table import feature_matrix
    from nucleoscope.classify.train import NucleusData, TrainConfig, train_all
    from nucleoscope.classify.validation import scores

    src = DATA / "blasi2016_jurkat_cellcycle"
    lab = pd.read_csv(src / "labels.csv")
    lab = lab[lab["split"] == "train"]
    from nucleoscope.features import nucleus_patches

    parts, crops, masks = [], [], []
    t0 = time.perf_counter()
    for stem, g in lab.groupby("file"):
        dna = tifffile.imread(src / "train" / "images" / f"{stem}_dna.tif")
        t, m = tile_table(dna)
        crops.append(dna[t["Tile"].to_numpy()].astype(np.float32))
        masks.append(m)
        meta = g.set_index("index").loc[t["Tile"]]
        # the montage is the image (the networks' intensity level is its median nucleus); each tile
        # (one cell) is its own validation group
        t["ImageName"] = stem
        t["Group"] = [f"{stem}_{i}" for i in t["Tile"]]
        t["Class"] = meta["class"].to_numpy()
        t["Experiment"] = meta["experiment"].to_numpy()
        parts.append(t)
    table = pd.concat(parts, ignore_index=True)
    t_feat = time.perf_counter() - t0
    X, cols = feature_matrix(table)
    crops, masks = np.concatenate(crops), np.concatenate(masks)
    pp, pr = [], []
    for i, (c, m) in enumerate(zip(crops, masks)):
        w = nucleus_patches(c, m.astype(np.int32), size=JURKAT_PATCH, stride=JURKAT_PATCH // 2)
        pp.append(w.images)
        pr.append(np.full(len(w), i))
    data = NucleusData(table, X, cols, crops, masks, np.concatenate(pp), np.concatenate(pr))
    t0 = time.perf_counter()
    # 40 px tiles: the CNN at 48 px (3 px per pool level at the end), PatchNet on 11 px patches
    res = train_all(data, TrainConfig(models=models, ablation="groups", embed=False, network_folds=network_folds,
                                      cnn={"input_size": 48, "max_epochs": epochs},
                                      patchnet={"patch_size": JURKAT_PATCH, "crop_size": 40, "max_epochs": epochs}))
    t_train = time.perf_counter() - t0
    rows = []
    net_rows = next((r.index for k, r in res.validation.items() if k in ("cnn", "patchnet")), None)
    for name, r in res.validation.items():
        row = {"Model": name}
        for e in (None, 1, 2):
            m = np.ones(len(r.y), bool) if e is None else table["Experiment"].to_numpy()[r.index] == e
            s = scores(r.y[m], r.predicted[m], r.classes)
            tag = "all" if e is None else f"E{e}"
            row[f"{tag} acc"] = s["accuracy"]
            row[f"{tag} macro recall"] = s["balanced_accuracy"]
        if net_rows is not None:  # on the networks' folds only, so the rows compare like with like
            m = np.isin(r.index, net_rows)
            s = scores(r.y[m], r.predicted[m], r.classes)
            row["net folds acc"], row["net folds macro recall"] = s["accuracy"], s["balanced_accuracy"]
        row["train s"] = res.seconds.get(name, np.nan)
        rows.append(row)
    return pd.DataFrame(rows), {"tiles": len(table), "patches": len(data.patches), "lost": int(len(lab) - len(table)), "features_s": t_feat,
                                "train_s": t_train, "folds": len(res.folds), "ablation": res.ablation,
                                "classes": table["Class"].value_counts().to_dict()}


def sensitivity(shifts=(0.0, 0.01, 0.02, 0.03, 0.05, 0.08), n=150, cnn_epochs: int = 0) -> pd.DataFrame:
    """Accuracy of logistic regression on default features (and of the crop CNN, trained on the crops
    themselves) telling hc_fraction 0.08 from 0.08 + shift."""
    from nucleoscope.classify.cnn import CNNClassifier
    from nucleoscope.classify.validation import grouped_folds
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
        row = {"hc_fraction shift": d, "logreg accuracy": r.nucleus["accuracy"]}
        if cnn_epochs:
            img, msk = s.image.astype(np.float32), s.labels > 0

            def fc(tr, te):
                m = CNNClassifier(input_size=48, batch_size=16, max_epochs=cnn_epochs).fit(img[tr], y[tr], masks=msk[tr])
                return m.predict_proba(img[te], masks=msk[te])
            row["cnn accuracy"] = cross_validate(fc, y, g, g, folds=grouped_folds(y, g, n_folds=3)).nucleus["accuracy"]
        rows.append(row)
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
    rng = np.random.default_rng(0)
    for name, meta in info.get("networks", {}).items():
        from nucleoscope.pipeline.classify import _load_network

        net = _load_network(Path(model_dir), name)
        if name == "cnn":
            s = meta["crop_size"]
            crops = rng.random((n, s, s), dtype=np.float32)
            masks = np.zeros((n, s, s), bool)
            masks[:, s // 4 : 3 * s // 4, s // 4 : 3 * s // 4] = True
            t0 = time.perf_counter()
            net.predict_proba(crops, masks=masks)
        else:  # ~6 patches per nucleus (Koyuncu's mean)
            p = meta["patch_size"]
            patches = rng.random((6 * n, p, p), dtype=np.float32)
            t0 = time.perf_counter()
            net.aggregate(net.predict_proba(patches), np.repeat(np.arange(n), 6))
        out[name] = time.perf_counter() - t0
    return out


def network_speed(n: int = 10_000) -> dict:
    """Seconds to predict ``n`` nuclei with the default crop CNN (128 px crops) and PatchNet (6 patches of
    17 px per nucleus, then their means). Untrained networks of the shipped architecture: the time does
    not depend on the weights, and this needs no training."""
    from nucleoscope.classify.cnn import CNNClassifier
    from nucleoscope.classify.patchnet import PatchNetClassifier

    rng = np.random.default_rng(0)
    out = {}
    cnn = CNNClassifier()
    cnn.classes_ = np.array(["a", "b"])
    cnn.net_ = cnn._new_net(2).eval()
    crops = rng.random((n, 128, 128), dtype=np.float32)
    masks = np.zeros((n, 128, 128), bool)
    masks[:, 44:84, 44:84] = True
    t0 = time.perf_counter()
    cnn.predict_proba(crops, masks=masks)
    out["cnn"] = time.perf_counter() - t0
    pn = PatchNetClassifier()
    pn.classes_ = np.array(["a", "b"])
    pn.net_ = pn._new_net(2).eval()
    patches = rng.random((6 * n, 17, 17), dtype=np.float32)
    t0 = time.perf_counter()
    pn.aggregate(pn.predict_proba(patches), np.repeat(np.arange(n), 6))
    out["patchnet"] = time.perf_counter() - t0
    return out


def _save(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, default=lambda v: v.item() if hasattr(v, "item") else str(v), indent=1))
    tmp.replace(path)


def md_table(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    fmt = lambda v: f"{v:.3f}" if isinstance(v, (float, np.floating)) else str(v)  # noqa: E731
    return ("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n" +
            "\n".join("| " + " | ".join(fmt(v) for v in r) + " |" for r in df.itertuples(index=False)) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="logreg,svm,forest,cnn,patchnet")
    ap.add_argument("--epochs", type=int, default=40, help="networks: epochs per training")
    ap.add_argument("--koyuncu-network-folds", type=int, default=None)
    ap.add_argument("--jurkat-network-folds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--part", choices=["all", "koyuncu", "jurkat", "sensitivity", "speed"], default="all")
    ap.add_argument("--results", default=str(Path(tempfile.gettempdir()) / "nucleoscope_bench_classify"),
                    help="folder the parts' results are kept in")
    ap.add_argument("--assemble", action="store_true", help="write the section from the parts' results")
    ap.add_argument("--note", default="", help="a sentence added under the command (how the parts were run)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    models = args.models.split(",")
    nets = [m for m in models if m in ("cnn", "patchnet")]
    net_args = ["--epochs", str(args.epochs)] if nets else []
    if nets and args.koyuncu_network_folds:
        net_args += ["--network-folds", str(args.koyuncu_network_folds)]
    # the parts can run as separate processes (--part, one core each) and be assembled afterwards
    res_dir = Path(args.results)
    res_dir.mkdir(parents=True, exist_ok=True)
    parts = ("koyuncu", "jurkat", "sensitivity", "speed") if args.part == "all" else (args.part,)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "koyuncu" in parts:
            ks, kinfo = koyuncu(tmp, args.models, net_args)
            print(ks.to_string(), flush=True)
            speed = predict_speed(kinfo["model_dir"])
            print(speed, flush=True)
            _save(res_dir / "koyuncu.json", {"scores": ks.to_dict("records"), "speed": speed,
                                            "info": {k: v for k, v in kinfo.items() if k not in ("model_dir", "run")}})
        if "jurkat" in parts:
            js, jinfo = jurkat(tuple(models), args.epochs, args.jurkat_network_folds)
            print(js.to_string(), flush=True)
            _save(res_dir / "jurkat.json", {"scores": js.to_dict("records"), "ablation": jinfo.pop("ablation").to_dict("records"),
                                           "info": jinfo})
        if "sensitivity" in parts:
            sens = sensitivity(cnn_epochs=30 if "cnn" in nets else 0)
            print(sens.to_string(), flush=True)
            _save(res_dir / "sensitivity.json", {"scores": sens.to_dict("records")})
        if "speed" in parts and nets:  # networks alone, on an otherwise idle machine
            sp = network_speed()
            print(sp, flush=True)
            _save(res_dir / "speed.json", sp)
    if args.part != "all" and not args.assemble:
        return
    k, j, se = (json.loads((res_dir / f"{n}.json").read_text()) for n in ("koyuncu", "jurkat", "sensitivity"))
    ks, kinfo, speed = pd.DataFrame(k["scores"]), k["info"], k["speed"]
    if (res_dir / "speed.json").is_file():
        speed |= json.loads((res_dir / "speed.json").read_text())
    js, jinfo = pd.DataFrame(j["scores"]), j["info"] | {"ablation": pd.DataFrame(j["ablation"])}
    sens = pd.DataFrame(se["scores"])
    keep = ["Model", "NucleusBalancedAccuracy", "ImageBalancedAccuracy", "NucleusAccuracy", "FoldsValidated",
            "TrainSeconds"]
    abl = jinfo["ablation"]
    abl = abl[abl["Kind"] != "group only"][["Removed", "Kind", "Features", "Nucleus", "NucleusDrop"]]
    cmd = (f"python bench/classify.py --models {args.models} --epochs {args.epochs} --jurkat-network-folds "
           f"{args.jurkat_network_folds}" + (f" --koyuncu-network-folds {args.koyuncu_network_folds}"
                                             if args.koyuncu_network_folds else ""))
    md = (f"## Classification (SCENMED §8)\n\n{stamp()}\n\n`{cmd}` (parts run side by side, one core each). {args.note}\n\n"
          "Networks: the crop CNN (`classify/cnn.py`: width 8, crops resized to 64 px (Koyuncu) / 48 px "
          f"(Jurkat), Adam 3e-4, batch 32, global average pooling, dropout 0.5) and PatchNet (`classify/patchnet.py`: width 16, "
          f"Adam 1e-3, batch 128; 17 px patches on Koyuncu, {JURKAT_PATCH} px on Jurkat), "
          f"{args.epochs} epochs at most per training, early stopping (patience 20) on a grouped 15% split "
          "of each training fold.\n\n"
          f"### HepG2 vs Huh7 (Koyuncu dev split, {kinfo['images']} images, {kinfo['nuclei']} nuclei after QC)\n\n"
          f"`nucleoscope run` (bundled NuSeT, default features, {kinfo['run_s']:.0f} s) then `nucleoscope classify "
          f"train` ({'%.0f s in all, ablation included' % kinfo['train_s'] if kinfo.get('train_s') else 'seconds per model in the table'}); {kinfo['folds']} image-grouped folds. "
          "Image = mean probability over its nuclei. Targets: 0.90 per nucleus, 0.95 per image.\n\n"
          + md_table(ks[[c for c in keep if c in ks]]) +
          f"\n### Jurkat cell cycle (Blasi 2016 dev split, DNA channel, {jinfo['tiles']} tiles, "
          f"{jinfo['lost']} without an object, {jinfo['patches']} patches)\n\nDefault features of the nucleus of "
          f"each tile; {jinfo['folds']} stratified folds (each tile its own group); the networks on the first "
          f"{args.jurkat_network_folds or jinfo['folds']} folds (columns *net folds*: every model on those "
          f"tiles only); features {jinfo['features_s']:.0f} s, "
          f"training {jinfo['train_s']:.0f} s. Classes: {jinfo['classes']}. E1 = Experiment 1 (all 7 classes), "
          "E2 = Experiment 2 (G1 only: its macro recall is G1 recall). Targets: accuracy 0.97, macro recall 0.92.\n\n"
          + md_table(js) + "\nFeature-group ablation (best feature model, nucleus balanced accuracy):\n\n" + md_table(abl) +
          "\n### Chromatin sensitivity (synthetic crops, `synth chromatin`, 150 per class)\n\n"
          "hc_fraction 0.08 vs 0.08 + shift; logistic regression on default features (7-fold CV) and the crop "
          "CNN on the crops (3-fold CV, 30 epochs, batch 16).\n\n" + md_table(sens) +
          "\n### Prediction speed (10,000 nuclei, one process)\n\nFeature models on a feature table; the CNN "
          "on 10,000 crops of 128 px (intensity reference, resize to 64 px, network); PatchNet on 60,000 "
          "patches of 17 px (6 per nucleus) and their per-nucleus means. Target: 30 s.\n\n" +
          md_table(pd.DataFrame([{"Model": k, "seconds": v} for k, v in speed.items()])))
    write_section("classify", md)


if __name__ == "__main__":
    main()
