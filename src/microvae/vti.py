"""VTK image data (``.vti``) of phase maps: what ParaView and DAMASK's ``GeomGrid.load`` read.

A ``.vti`` file holds one phase map as a grid of cells (a 2-D map: one cell thick) with the
pixel size as spacing and two cell arrays: ``material`` (int32, the name DAMASK reads) and
``phase`` (uint8), both 0 for the matrix and 1 for the second phase. Cell (x, y, z) is pixel
[z, y, x] of the array (row y = 0 first, as in the image file). The ``pixel_unit`` is kept as
field data. Written with VTK's own XML writer (zlib-compressed), read back with its reader.
"""

from __future__ import annotations

import os

import numpy as np

from .atomic import atomic_path
from .errors import MicrovaeError


def _vtk():
    try:
        import vtk
        from vtk.util import numpy_support
    except ImportError as exc:  # pragma: no cover - vtk is a dependency
        raise MicrovaeError("export to .vti needs the vtk package: pip install vtk") from exc
    return vtk, numpy_support


def write_vti(path: str | os.PathLike, phase: np.ndarray, pixel_size: float = 1.0,
              pixel_unit: str = "px") -> None:
    """Write a binary phase map (H, W) or volume (D, H, W) as VTK image data (atomic)."""
    vtk, numpy_support = _vtk()
    phase = np.asarray(phase)
    if phase.ndim not in (2, 3) or not np.isin(phase, (0, 1)).all():
        raise MicrovaeError(f"{path}: a phase map is a 2-D or 3-D array of 0 and 1, got shape "
                            f"{phase.shape} with values {np.unique(phase)[:5].tolist()}")
    volume = phase[None] if phase.ndim == 2 else phase
    depth, height, width = volume.shape
    image = vtk.vtkImageData()
    image.SetDimensions(width + 1, height + 1, depth + 1)  # points; the cells are the pixels
    image.SetSpacing(pixel_size, pixel_size, pixel_size)
    image.SetOrigin(0.0, 0.0, 0.0)
    flat = np.ascontiguousarray(volume).ravel()  # x fastest, then y, then z: VTK's cell order
    for name, values, kind in (("material", flat.astype(np.int32), vtk.VTK_INT),
                               ("phase", flat.astype(np.uint8), vtk.VTK_UNSIGNED_CHAR)):
        array = numpy_support.numpy_to_vtk(values, deep=True, array_type=kind)
        array.SetName(name)
        image.GetCellData().AddArray(array)
    unit = vtk.vtkStringArray()
    unit.SetName("pixel_unit")
    unit.InsertNextValue(pixel_unit)
    image.GetFieldData().AddArray(unit)
    with atomic_path(path) as tmp:
        writer = vtk.vtkXMLImageDataWriter()
        writer.SetFileName(str(tmp))
        writer.SetInputData(image)
        writer.SetCompressorTypeToZLib()
        writer.SetDataModeToAppended()
        if not writer.Write():
            raise MicrovaeError(f"{path}: VTK could not write the file")


def read_vti(path: str | os.PathLike) -> tuple[np.ndarray, float, str]:
    """``(phase (D, H, W) uint8, pixel size, pixel unit)`` of a file :func:`write_vti` wrote."""
    vtk, numpy_support = _vtk()
    if not os.path.isfile(path):
        raise MicrovaeError(f"{path}: file not found")
    reader = vtk.vtkXMLImageDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    array = image.GetCellData().GetArray("phase")
    if array is None:
        raise MicrovaeError(f"{path}: no cell array 'phase' (not written by microvae export)")
    nx, ny, nz = (max(1, d - 1) for d in image.GetDimensions())
    phase = numpy_support.vtk_to_numpy(array).reshape(nz, ny, nx).astype(np.uint8)
    unit_array = image.GetFieldData().GetAbstractArray("pixel_unit")
    unit = unit_array.GetValue(0) if unit_array is not None else "px"
    return phase, float(image.GetSpacing()[0]), unit
