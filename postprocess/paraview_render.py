"""Render a seppinn run with ParaView (run under pvpython, offscreen):

    xvfb-run -a pvpython postprocess/paraview_render.py RUN_DIR [FIELD] [--iso VALUE]
    (Debian's ParaView build needs an X display; xvfb-run provides one)

Opens RUN_DIR/solution.xdmf with ParaView's XDMF reader and writes into RUN_DIR:
  paraview_slices.png  - the field on the three mid-planes (last time step for time series);
  paraview_iso.png     - an isosurface of the field (default: the mid value of its range), e.g.
                         0.5 for an occupancy volume.
"""

from __future__ import annotations

import sys
from pathlib import Path

from paraview import simple  # type: ignore[import-not-found]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    run = Path(argv[0])
    field = argv[1] if len(argv) > 1 and not argv[1].startswith("--") else "u"
    iso = float(argv[argv.index("--iso") + 1]) if "--iso" in argv else None
    reader = simple.OpenDataFile(str(run / "solution.xdmf"))  # ParaView picks its XDMF reader
    values = reader.TimestepValues
    times = list(values) if hasattr(values, "__len__") else ([values] if values else [])
    last = times[-1] if times else None
    if last is None:
        reader.UpdatePipeline()
    else:
        reader.UpdatePipeline(last)
    lo, hi = reader.PointData[field].GetRange()
    bounds = reader.GetDataInformation().GetBounds()
    center = [(bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2, (bounds[4] + bounds[5]) / 2]
    view = simple.CreateView("RenderView")
    view.ViewSize = [900, 700]
    if last is not None:
        view.ViewTime = last
    view.OrientationAxesVisibility = 1
    lut = simple.GetColorTransferFunction(field)
    lut.RescaleTransferFunction(lo, hi)
    for normal in ([1, 0, 0], [0, 1, 0], [0, 0, 1]):
        sl = simple.Slice(Input=reader)
        sl.SliceType.Origin = center
        sl.SliceType.Normal = normal
        d = simple.Show(sl, view)
        simple.ColorBy(d, ("POINTS", field))
    simple.ResetCamera(view)
    view.CameraPosition = [center[0] + 3, center[1] - 4, center[2] + 3]
    view.CameraFocalPoint = center
    simple.SaveScreenshot(str(run / "paraview_slices.png"), view)
    for src in list(simple.GetSources().values()):
        simple.Hide(src, view)
    contour = simple.Contour(Input=reader, ContourBy=["POINTS", field],
                             Isosurfaces=[iso if iso is not None else (lo + hi) / 2])
    d = simple.Show(contour, view)
    simple.ColorBy(d, ("POINTS", field))
    simple.ResetCamera(view)
    simple.SaveScreenshot(str(run / "paraview_iso.png"), view)
    print(run / "paraview_slices.png", run / "paraview_iso.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
