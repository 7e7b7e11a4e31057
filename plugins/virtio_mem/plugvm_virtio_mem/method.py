"""`--memory hotplug_method=virtio-mem`: the memory-hotplug method (plugvm.memory_hotplug)
behind a virtio-mem device, as cloud-hypervisor's (notes §3d).

The whole window is guest RAM from boot on (mapped and in a KVM slot, not in e820);
resize only changes requested_size and tells the driver, which plugs or unplugs blocks.
The core calls the method's parts as memory_hotplug.py lists; the device type (in
__init__.py) builds the device from this boot's VirtioMemHotplug.
"""

from __future__ import annotations

import dataclasses

from plugvm.memory_hotplug import MEMORY_BLOCK, MemoryHotplug, MemoryHotplugMethod, Resized, ResizeRefused

from plugvm_virtio_mem.blocks import BLOCK_SIZE
from plugvm_virtio_mem.region import VirtioMemRegion

NAME = "virtio-mem"


class VirtioMemMethod(MemoryHotplugMethod):
    """virtio-mem: no registers, no AML; the default reserve() (the window at
    window_start(), hotplug_size rounded up to 128 MiB) is ch's placement."""

    name = NAME
    registers_size = 0

    def validate(self, memory_config, where) -> None:
        c = memory_config
        # ch's VIRTIO_MEM_ALIGN_SIZE: the region is made of whole Linux memory blocks.
        if c.hotplug_size is not None and c.hotplug_size % MEMORY_BLOCK:
            raise where.error(f"hotplug_size={where.size(c.hotplug_size)} is not a multiple of "
                              f"{where.size(MEMORY_BLOCK)}, as virtio-mem needs")
        if c.hotplugged_size is not None and c.hotplugged_size % BLOCK_SIZE:
            raise where.error(f"hotplugged_size={where.size(c.hotplugged_size)} is not a multiple of "
                              f"virtio-mem's {where.size(BLOCK_SIZE)} block")
        # A block is given back by discarding it; a larger huge page cannot be split.
        if c.hugepage_size is not None and c.hugepage_size > BLOCK_SIZE:
            raise where.error(f"hugepage_size={where.size(c.hugepage_size)} is larger than "
                              f"virtio-mem's {where.size(BLOCK_SIZE)} block")

    def attach(self, env) -> VirtioMemHotplug:
        env.add_region(env.window.start, env.window.size)
        return VirtioMemHotplug(env)


class VirtioMemHotplug(MemoryHotplug):
    """One boot's virtio-mem: the region the device serves, sized from the VM config."""

    def __init__(self, env):
        self.env = env
        self.boot_size = env.config.size
        # After a reboot the guest is asked for what it had (resize wrote hotplugged_size).
        self.region = VirtioMemRegion(env.memory, env.window.start, env.window.size,
                                      env.config.hotplugged_size or 0)

    def actual_size(self) -> int:
        return self.boot_size + self.region.plugged_size

    def check_resize(self, desired: int) -> None:
        boot, size = self.boot_size, self.region.size
        if desired < self.boot_size:
            raise ResizeRefused(f"desired_ram={desired} is less than the boot RAM ({boot} bytes), "
                                f"which virtio-mem cannot take away")
        if desired - boot > size:
            raise ResizeRefused(f"desired_ram={desired} is more than the boot RAM ({boot} bytes) and the "
                                f"virtio-mem region ({size} bytes) together")
        if (desired - boot) % BLOCK_SIZE:
            raise ResizeRefused(f"desired_ram={desired} is the boot RAM ({boot} bytes) plus {desired - boot} "
                                f"bytes, not a multiple of virtio-mem's {BLOCK_SIZE}-byte block")

    def resize(self, desired: int) -> Resized:
        self.check_resize(desired)
        requested = desired - self.boot_size
        done = self.region.ask(requested)
        # ch's VirtioMem resize: hotplugged_size is the requested size, None when 0.
        config = dataclasses.replace(self.env.config, hotplugged_size=requested or None)
        return Resized(config=config, done=done)
