"""Readers for the weight files of the models we support."""
