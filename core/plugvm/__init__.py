"""plugvm: a virtual machine monitor for Linux/KVM in which every device type is a plugin."""

__version__ = "0.1.0"
