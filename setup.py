"""Only for what pyproject.toml cannot say: the cffi extensions built at install time
(the KVM binding, and the C chain walk of plugvm.virtio.c_ring)."""

from setuptools import setup

setup(cffi_modules=["core/plugvm/kvm/_build.py:ffibuilder", "core/plugvm/virtio/_ring_build.py:ffibuilder"])
