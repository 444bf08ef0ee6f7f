"""Readers of the weight files of the models we support (piscis ``.pt``, TensorFlow bundles) and our own format.

May import: ``core.errors``, ``core.common``, ``core.io``, ``core.models`` (its peer).
"""
