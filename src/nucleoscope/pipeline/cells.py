"""The ``cells`` job: nuclei as in ``run``, then each nucleus's whole cell from a second image of the
same field (paired by file name), with cell and cytoplasm labels sharing the nucleus's id and the nuclei
table joined with ``Cells_*`` / ``Cytoplasm_*`` columns. Driven by the batch engine (a :class:`RunJob`
extended by one step).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .. import InputError
from ..segment.cells import CELL_COLUMNS, CellConfig
from .engine import OUTPUT_SUBFOLDERS, Item, run_jobs
from .measure import files_by_name
from .run import IMAGE_COLUMNS, RunConfig, RunJob, model_identity

__all__ = ["CELL_IMAGE_COLUMNS", "CellsJob", "cells_batch", "pair_fields"]

CELL_IMAGE_COLUMNS = IMAGE_COLUMNS + ["CellsPath", "Cells", "ForegroundFraction"]


def pair_fields(nuclei: list[Path], cells: list[Path]) -> tuple[list[Item], list[Item]]:
    """Pair nucleus and cell images by identical image name (two single files pair whatever their names).

    Returns
    -------
    (items, orphans)
        ``items`` one per nucleus image (``partner`` None when no cell image has its name); ``orphans``
        the cell images without a nucleus image, as items of their own (recorded as failures).

    Raises
    ------
    InputError
        Two images of one side share a name.
    """
    from ..io import image_name

    if len(nuclei) == 1 and len(cells) == 1:
        return [Item(image_name(nuclei[0]), os.fspath(nuclei[0]), partner=os.fspath(cells[0]))], []
    nd, cd = files_by_name(nuclei, "nucleus"), files_by_name(cells, "cell")
    items = [Item(n, os.fspath(p), partner=os.fspath(cd[n]) if n in cd else None) for n, p in nd.items()]
    orphans = [Item(n, os.fspath(p)) for n, p in cd.items() if n not in nd]
    return items, orphans


@dataclass(frozen=True)
class CellsJob(RunJob):
    """``nucleoscope cells`` / ``run --cells``: the run job plus whole cells from the partner image."""

    cell_config: CellConfig = CellConfig()
    orphans: tuple = ()

    kind = "cells"

    def key(self) -> str:
        return hashlib.sha256(json.dumps([super().key(), asdict(self.cell_config)], sort_keys=True)
                              .encode()).hexdigest()[:16]

    def image_columns(self) -> list[str]:
        return list(CELL_IMAGE_COLUMNS)

    def table_columns(self) -> list[str]:
        return super().table_columns() + CELL_COLUMNS[1:]

    def empty_record(self, item: Item) -> dict[str, Any]:
        rec = super().empty_record(item)
        rec.update(CellsPath=item.partner or "", Cells=0)
        return rec

    def outputs(self, out: Path, name: str) -> list[Path]:
        return super().outputs(out, name) + [out / "cells" / f"{name}.tif", out / "cytoplasm" / f"{name}.tif"]

    def process(self, item: Item, out: Path, rec: dict[str, Any]) -> pd.DataFrame:
        from .. import io
        from ..segment.cells import measure_cells, segment_cells
        from .overlay import overlay_cells_rgb

        if item.name in self.orphans:
            raise InputError("this cell image has no nucleus image of the same name", path=item.path)
        if item.partner is None:
            raise InputError("no cell image of the same name for this nucleus image", path=item.path)
        c = self.config
        cell_img = io.read_image(item.partner, channel=c.channel, plane=c.plane, pixel_size=c.pixel_size)
        nuc_shape = io.read_image(item.path, channel=c.channel, plane=c.plane).data.shape
        if cell_img.data.shape != nuc_shape:
            raise InputError(f"cell image {item.partner} is {cell_img.data.shape}, nucleus image {item.path} is "
                             f"{nuc_shape}: a pair must have the same shape", path=item.partner)
        table = super().process(item, out, rec)  # nuclei: labels/, overlays/ (redrawn below), table
        nuclei = io.read_labels(out / "labels" / f"{item.name}.tif")
        try:
            res = segment_cells(cell_img.data, nuclei, self.cell_config)
        except InputError as exc:
            raise InputError(f"{exc.problem} (pair of {item.path})", path=item.partner) from exc
        io.write_labels(out / "cells" / f"{item.name}.tif", res.cells, spacing=cell_img.spacing)
        io.write_labels(out / "cytoplasm" / f"{item.name}.tif", res.cytoplasm, spacing=cell_img.spacing)
        if c.overlays:
            io.write_png(out / "overlays" / f"{item.name}.png", overlay_cells_rgb(cell_img.data, nuclei, res.cells))
        cells = measure_cells(cell_img.data, nuclei, res.cells, res.cytoplasm)
        rec.update(CellsPath=item.partner, Cells=int((cells["Cells_Parent_Nuclei"] > 0).sum()),
                   ForegroundFraction=float(res.mask.mean()))
        return table.merge(cells, on="ObjectNumber", how="left", validate="one_to_one")

    def parameters(self) -> dict[str, Any]:
        return {**super().parameters(), "cells": asdict(self.cell_config)}


def cells_batch(nuclei: Sequence[str | os.PathLike], cells: Sequence[str | os.PathLike], out: str | os.PathLike,
                config: RunConfig = RunConfig(), cell_config: CellConfig = CellConfig(), *, jobs: int = 1,
                show_progress: bool = True, recursive: bool = False, command: str | None = None,
                scheduler: str | None = None) -> pd.DataFrame:
    """Nuclei and whole cells of paired images; resumable like :func:`~nucleoscope.pipeline.run_batch`.

    Parameters
    ----------
    nuclei, cells : sequence
        Nucleus-stain and cell-stain images (files, folders or globs), paired by image name
        (:func:`pair_fields`).
    out : str or os.PathLike
        Output folder: labels/, cells/, cytoplasm/, overlays/, nuclei.parquet/.csv, images.csv, run.json.
    config : RunConfig
        The nucleus segmentation and measurements (as ``run``).
    cell_config : CellConfig
    jobs, show_progress, recursive, command
        As :func:`~nucleoscope.pipeline.run_batch`.

    Returns
    -------
    pandas.DataFrame
        One row per image (nucleus images, then cell images without a partner), :data:`CELL_IMAGE_COLUMNS`.
    """
    from ..io import find_images
    from ..segment import resolve_method

    out = Path(out)
    exclude = [out / d for d in OUTPUT_SUBFOLDERS]
    for given in [*nuclei, *cells]:
        p = Path(given).resolve()
        for d in exclude:
            if p == d.resolve() or d.resolve() in p.parents:
                raise InputError(f"this input lies in the output's own folder {d}, which the run writes; "
                                 "choose another -o", path=given)
    nuc = find_images(nuclei, recursive=recursive, exclude=exclude)
    cel = find_images(cells, recursive=recursive, exclude=exclude)
    items, orphans = pair_fields(nuc, cel)
    config = replace(config, method=resolve_method(config.method))
    job = CellsJob(config, model_identity(config.method, config.segment_options), cell_config,
                   tuple(o.name for o in orphans))
    return run_jobs(job, items + orphans, out, jobs=jobs, show_progress=show_progress, command=command,
                    inputs=[*nuclei, *cells], scheduler=scheduler)
