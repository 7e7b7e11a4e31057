"""Only for what pyproject.toml cannot say: the cffi extension built at install time."""

from setuptools import setup

setup(cffi_modules=["core/plugvm/kvm/_build.py:ffibuilder"])
