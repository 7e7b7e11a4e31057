"""Only for what pyproject.toml cannot say: blk.c, built at install time through cffi."""

from setuptools import setup

setup(cffi_modules=["plugvm_virtio_blk/_fast_build.py:ffibuilder"])
