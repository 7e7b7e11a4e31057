"""A 16550A UART (COM1), as Linux's 8250 driver probes and drives it.

Register map and bits: the PC16550D datasheet. Transmission is instant (THR is
always empty again by the time the guest looks), so the only interrupts are
"THR empty" and "data ready". Received bytes are never dropped: the receive
FIFO is as deep as the host gives it input.

Transmitted bytes are written to the host in lines, not one by one: printk
polls LSR and writes THR a byte at a time, and a write(2) per byte (which also
wakes whoever reads our output) cost ten times the exit itself in the lab, a
fifth of a verbose boot. A line goes out when its newline is written; what has
no newline yet (a prompt, an echoed key) goes out FLUSH_DELAY later, from the
UART's own flusher thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable

from plugvm.thread_names import name_this_thread

IER_RDA, IER_THRE = 0x01, 0x02
IIR_NONE, IIR_THRE, IIR_RDA, IIR_FIFO = 0x01, 0x02, 0x04, 0xC0
LCR_DLAB = 0x80
MCR_LOOP = 0x10
LSR_DR, LSR_THRE, LSR_TEMT = 0x01, 0x20, 0x40
MSR_CTS, MSR_DSR, MSR_RI, MSR_DCD = 0x10, 0x20, 0x40, 0x80
FCR_ENABLE, FCR_CLEAR_RX = 0x01, 0x02
RX_LIMIT = 1 << 16
TX_CHUNK = 4096          # bytes held before they go out even without a newline
FLUSH_DELAY = 0.01       # seconds a partial line waits: below what a person typing notices


class Serial:
    """The UART on the port bus. `output` gets every transmitted byte, in order, in
    chunks of up to a line; `trigger` pulses the IRQ line; receive() feeds it input
    from the host. close() writes out what is held and stops the flusher."""

    def __init__(self, output: Callable[[bytes], None], trigger: Callable[[], None]):
        self._output = output
        self._trigger = trigger
        self._lock = threading.Lock()
        self._rx: deque[int] = deque()
        self.ier = self.lcr = self.mcr = self.scr = 0
        self.dll, self.dlh = 0x0C, 0  # 9600 baud until the guest programs it
        self._fifo = False
        self._thre_pending = False
        # Transmit side: _tx_lock orders the bytes and the writes of them; _armed is set
        # while a partial line waits for the flusher.
        self._tx = bytearray()
        self._tx_lock = threading.Lock()
        self._armed = threading.Event()
        self._closed = False
        # Started here, by whoever builds the machine, rather than at the first partial
        # line: a thread started by a vCPU thread would inherit its name and pinning.
        self._flusher = threading.Thread(target=self._flush_later, name="serial-flush", daemon=True)
        self._flusher.start()

    # -- transmit ----------------------------------------------------------------------------

    def _transmit(self, value: int) -> None:
        with self._tx_lock:
            self._tx.append(value)
            if value == 0x0A or len(self._tx) >= TX_CHUNK or self._closed:
                self._flush_locked()
            elif not self._armed.is_set():
                self._armed.set()

    def _flush_locked(self) -> None:
        if self._tx:
            data = bytes(self._tx)
            self._tx.clear()
            self._output(data)

    def _flush_later(self) -> None:
        name_this_thread("serial-flush")
        while True:
            self._armed.wait()
            if self._closed:
                return
            time.sleep(FLUSH_DELAY)
            with self._tx_lock:
                if self._closed:      # close() came during the sleep and wrote it all out
                    return
                # Cleared with the buffer emptied, under the lock: a byte written after
                # this arms it again.
                self._armed.clear()
                self._flush_locked()

    def flush(self) -> None:
        """Write out what is held now."""
        with self._tx_lock:
            self._flush_locked()

    def close(self) -> None:
        """Write out what is held; bytes written after this go out at once."""
        with self._tx_lock:
            self._closed = True
            self._flush_locked()
        self._armed.set()
        if self._flusher is not threading.current_thread():
            self._flusher.join()

    # -- host side ---------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        with self._lock:
            room = RX_LIMIT - len(self._rx)
            self._rx.extend(data[:room])
            fire = bool(self.ier & IER_RDA) and bool(data)
        if fire:
            self._trigger()

    # -- guest side --------------------------------------------------------------------------

    def _iir(self) -> int:
        if self.ier & IER_RDA and self._rx:
            iir = IIR_RDA
        elif self.ier & IER_THRE and self._thre_pending:
            iir = IIR_THRE
        else:
            iir = IIR_NONE
        return iir | (IIR_FIFO if self._fifo else 0)

    def _msr(self) -> int:
        if self.mcr & MCR_LOOP:
            # Loopback (the 8250 driver's probe checks this): outputs appear as inputs.
            return (((self.mcr & 0x02) << 3) | ((self.mcr & 0x01) << 5) | ((self.mcr & 0x04) << 4)
                    | ((self.mcr & 0x08) << 4))
        return MSR_DCD | MSR_DSR | MSR_CTS

    def read(self, offset: int, data: memoryview) -> None:
        with self._lock:
            value = self._read(offset)
        data[0] = value
        data[1:] = b"\0" * (len(data) - 1)

    def _read(self, offset: int) -> int:
        dlab = self.lcr & LCR_DLAB
        if offset == 0:
            if dlab:
                return self.dll
            return self._rx.popleft() if self._rx else 0
        if offset == 1:
            return self.dlh if dlab else self.ier
        if offset == 2:
            iir = self._iir()
            if iir & 0x0F == IIR_THRE:
                self._thre_pending = False   # reading IIR clears the THR-empty interrupt
            return iir
        if offset == 3:
            return self.lcr
        if offset == 4:
            return self.mcr
        if offset == 5:
            return LSR_THRE | LSR_TEMT | (LSR_DR if self._rx else 0)
        if offset == 6:
            return self._msr()
        return self.scr

    def write(self, offset: int, data: memoryview) -> None:
        value = data[0]
        fire = False
        out = None
        with self._lock:
            dlab = self.lcr & LCR_DLAB
            if offset == 0 and dlab:
                self.dll = value
            elif offset == 0:
                if self.mcr & MCR_LOOP:
                    self._rx.append(value)
                    fire = bool(self.ier & IER_RDA)
                else:
                    out = value
                # One edge per burst, as a FIFO UART gives: while THR-empty is still
                # pending (the guest has not read IIR since), the line was already raised
                # and the driver's handler will see it; a pulse per byte only makes it
                # run again for nothing.
                fire = fire or bool(self.ier & IER_THRE) and not self._thre_pending
                self._thre_pending = True
            elif offset == 1 and dlab:
                self.dlh = value
            elif offset == 1:
                enabling_thre = value & IER_THRE and not self.ier & IER_THRE
                self.ier = value & 0x0F
                if enabling_thre:
                    self._thre_pending = True
                fire = self._iir() & 0x0F != IIR_NONE
            elif offset == 2:
                self._fifo = bool(value & FCR_ENABLE)
                if value & FCR_CLEAR_RX:
                    self._rx.clear()
            elif offset == 3:
                self.lcr = value
            elif offset == 4:
                self.mcr = value & 0x1F
            elif offset == 7:
                self.scr = value
        if out is not None:
            self._transmit(out)
        if fire:
            self._trigger()
