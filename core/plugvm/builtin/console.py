"""virtio-console (virtio 1.2 §5.3): the guest's hvc0, set by --console (VmConfig.console).

One port, no MULTIPORT: receiveq0 (index 0) and transmitq0 (1). As cloud-hypervisor's
(virtio-devices/src/console.rs), it offers VIRTIO_CONSOLE_F_SIZE with the terminal's
columns and rows in tty mode (0 x 0 otherwise), and is created before the disks with id
__console, so with ch's defaults it sits at 00:01.0. What the guest transmits goes to the
console's host end (serial_port.ConsoleBackend); what is typed in tty mode comes from
plugvm's one stdin reader, is held here (at most INPUT_LIMIT bytes: the reader then waits)
and goes into receive buffers on the device's I/O thread.
"""

from __future__ import annotations

import os
import struct
import threading

from plugvm.config.console import ConsoleMode, VirtioConsoleConfig, console_from_json, parse_console
from plugvm.config.errors import Where
from plugvm.config.json_fields import JsonObject
from plugvm.hookspecs import hookimpl
from plugvm.plugins import DeviceType
from plugvm.virtio.device import DeviceError, VirtioDevice

DEVICE_TYPE = 3                     # virtio 1.2 §5.3.1
QUEUE_SIZE = 256                    # ch's
RECEIVEQ, TRANSMITQ = 0, 1          # §5.3.2, port 0 only
VIRTIO_CONSOLE_F_SIZE = 1 << 0      # §5.3.3
CONFIG = struct.Struct("<HHII")     # §5.3.4: cols, rows, max_nr_ports, emerg_wr
INPUT_LIMIT = 64 << 10              # typed bytes held while the guest posts no receive buffers
JSON = Where("console", json=True)


class VirtioConsole(VirtioDevice):
    """One console port over a ConsoleBackend (None: output discarded, no input)."""

    device_type = DEVICE_TYPE
    queue_sizes = (QUEUE_SIZE, QUEUE_SIZE)

    def __init__(self, backend=None):
        self.backend = backend
        self.cols, self.rows = backend.window_size() if backend is not None else (0, 0)
        self.rx = self.tx = self.context = None
        self._pending = bytearray()
        self._space = threading.Condition()     # guards _pending; the input thread waits on it when full
        self._closed = False
        self._input = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)     # input thread → I/O thread
        if backend is not None:
            backend.attach(self)

    def device_features(self) -> int:
        return VIRTIO_CONSOLE_F_SIZE

    def config_bytes(self) -> bytes:
        return CONFIG.pack(self.cols, self.rows, 1, 0)

    def activate(self, memory, queues, features, context) -> None:
        self.rx, self.tx, self.context = queues[RECEIVEQ], queues[TRANSMITQ], context
        context.watch(self._input, self._on_input)
        if features & VIRTIO_CONSOLE_F_SIZE:
            context.interrupt_config()          # as ch: the driver reads the size now
        self._fill_rx()

    def queue_notify(self, index: int) -> None:
        if index == RECEIVEQ:
            self._fill_rx()
        elif index == TRANSMITQ:
            self._drain_tx()

    # --- the input thread --------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Bytes typed on plugvm's stdin (tty mode), from the input thread: held until the
        guest posts receive buffers; waits while INPUT_LIMIT bytes are already held."""
        with self._space:
            while len(self._pending) >= INPUT_LIMIT and not self._closed:
                self._space.wait()
            if self._closed:
                return
            self._pending += data
            os.eventfd_write(self._input, 1)      # under the lock: close() cannot close it meanwhile

    # --- the I/O thread ----------------------------------------------------------------------

    def _on_input(self) -> None:
        try:
            os.eventfd_read(self._input)
        except BlockingIOError:
            pass
        self._fill_rx()

    def _fill_rx(self) -> None:
        queue = self.rx
        if queue is None:
            return
        pushed = 0
        with self._space:
            while self._pending and (chain := queue.pop()) is not None:
                if chain.readable:
                    raise DeviceError(f"receiveq chain {chain.head} has device-readable buffers "
                                      f"(virtio 1.2 §5.3.6.1: receive buffers are device-writable)")
                filled = 0
                for buf in chain.writable:
                    n = min(len(buf), len(self._pending) - filled)
                    buf[:n] = self._pending[filled:filled + n]
                    filled += n
                    if filled == len(self._pending):
                        break
                del self._pending[:filled]
                queue.push(chain.head, filled)
                pushed += 1
            self._space.notify_all()
        if pushed and queue.needs_interrupt():
            self.context.interrupt_queue(RECEIVEQ)

    def _drain_tx(self) -> None:
        queue = self.tx
        if queue is None:
            return
        while (chain := queue.pop()) is not None:
            if chain.writable:
                raise DeviceError(f"transmitq chain {chain.head} has device-writable buffers "
                                  f"(virtio 1.2 §5.3.6.1: transmit buffers are device-readable)")
            if self.backend is not None:
                self.backend.writev(chain.readable)      # straight from guest memory
            queue.push(chain.head, 0)
        if queue.needs_interrupt():
            self.context.interrupt_queue(TRANSMITQ)

    def reset(self) -> None:
        # Input already held stays for the next activation, as ch's in_buffer does.
        self.rx = self.tx = self.context = None

    def close(self) -> None:
        with self._space:
            self._closed = True
            self._space.notify_all()
        if self.backend is not None:
            self.backend.detach(self)
            self.backend = None
        if self._input >= 0:
            os.close(self._input)
            self._input = -1


def _configs(vm_config) -> tuple:
    console = vm_config.console
    return () if console.mode is ConsoleMode.OFF else (console,)


def _create(config: VirtioConsoleConfig, env) -> VirtioConsole:
    # null mode has a backend too, which discards; a factory without consoles (a test) gets none.
    consoles = getattr(env, "consoles", None)
    return VirtioConsole(consoles.console if consoles is not None else None)


@hookimpl
def plugvm_device_types() -> list[DeviceType]:
    return [DeviceType(name="console", kind="virtio", cli_option="--console", config_key="console", multiple=False,
                       parse=parse_console, from_json=lambda body: console_from_json(JsonObject(body, JSON)),
                       create=_create, configured_by=_configs, fixed_id="__console", order=5, removable=False,
                       help="virtio-console (hvc0): off|null|tty|file=PATH, set by the VM config's console")]

