"""Classify and explain nuclei (SCENMED §8)."""
