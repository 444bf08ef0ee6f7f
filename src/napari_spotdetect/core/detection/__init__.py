"""Tiled inference, image -> tiles -> spots: :func:`~.detect.detect` and its generator, the tile plan, speed
modes, the contrast floor, and many images at once (resumable, in one process or on Dask).

May import: ``core.errors``, ``core.common``, ``core.io``, ``core.models``, ``core.weights``.
"""
