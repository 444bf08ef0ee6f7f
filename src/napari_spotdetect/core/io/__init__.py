"""Files in and out: images with their axes and pixel size (also lazily, by tiles), spot CSVs, exports for
Fiji / SpatialData, physical units and crash-safe writes. No torch here, so napari's reader and writer start fast.

May import: ``core.errors``, ``core.common`` (not ``common.device``: it loads torch).
"""
