"""The networks (Piscis, DeepSpot), the :class:`~.base.SpotModel` wrapper the engine drives, the array operations
they share, the zoo (a name or a path -> a ready model) and model cards.

May import: ``core.errors``, ``core.common``, ``core.io``, ``core.weights`` (its peer: models read weight files,
weight readers build models).
"""
