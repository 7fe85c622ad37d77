"""Export formats by name (``seppinn export --format``); torch-free, so the CLI parses its
arguments before importing anything heavy."""

FORMATS = {"xdmf": "XDMF index + HDF5 (ParaView, time series)", "vtu": "VTK unstructured grid (meshio)",
           "vti": "VTK image data"}
