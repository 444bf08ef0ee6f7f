"""From spots to biology: per-spot Gaussian fits, molecule counts of clusters, spots per cell, feature filters.

May import: ``errors``, ``common``, ``io``, ``models``, ``weights``, ``detection``, ``groundtruth``.
"""
