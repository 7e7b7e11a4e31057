"""A hand-made bzImage of a few dozen bytes: it prints a line on COM1 and powers off.

It runs even where only KVM's instruction emulator can run guests (PVM), so it
shows that plugvm boots on any KVM, and it times plugvm's own start-up.
"""

from __future__ import annotations

import struct

LOAD_ADDR = 0x100000         # where a bzImage's protected-mode code is loaded and entered
SETUP_SECTS = 1


def code(message: bytes, poweroff: bool = True) -> bytes:
    """32-bit code: write message to port 0x3f8, then S5 to the ACPI sleep register (0x600)
    or, without poweroff, spin forever (for measuring a running VMM)."""
    msg_addr = LOAD_ADDR + 27
    body = (b"\x66\xba\xf8\x03"                      # mov dx, 0x3f8
            + b"\xbe" + struct.pack("<I", msg_addr)  # mov esi, msg
            + b"\xac"                                # loop: lodsb
            + b"\x84\xc0"                            # test al, al
            + b"\x74\x03"                            # jz done
            + b"\xee"                                # out dx, al
            + b"\xeb\xf8"                            # jmp loop
            + b"\x66\xba\x00\x06"                    # done: mov dx, 0x600
            + (b"\xb0\x34" if poweroff else b"\xeb\xfe")  # mov al, SLP_TYP(5) << 2 | SLP_EN; or jmp $
            + b"\xee"                                # out dx, al
            + b"\xf4"                                # hlt
            + b"\xeb\xfd")                           # jmp hlt
    assert len(body) == 27
    return body + message + b"\0"


def bzimage(message: bytes = b"hello from a tiny guest\n", poweroff: bool = True) -> bytes:
    """The image: a boot sector and one setup sector holding the setup header, then the code."""
    setup = bytearray(512 * (1 + SETUP_SECTS))
    setup[0x1F1] = SETUP_SECTS
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)          # boot_flag
    setup[0x200:0x202] = b"\xeb\x66"                     # jump over the header; 0x201 gives its length
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)          # boot protocol 2.15
    setup[0x211] = 0x01                                   # LOADED_HIGH
    struct.pack_into("<I", setup, 0x214, LOAD_ADDR)       # code32_start
    struct.pack_into("<I", setup, 0x22C, 0x7FFFFFFF)      # initrd_addr_max
    struct.pack_into("<I", setup, 0x230, 0x200000)        # kernel_alignment
    struct.pack_into("<I", setup, 0x238, 255)             # cmdline_size
    struct.pack_into("<I", setup, 0x260, 0x10000)         # init_size
    return bytes(setup) + code(message, poweroff)


def pvh_code() -> bytes:
    """32-bit code for the PVH entry: if %ebx points at hvm_start_info (its magic, checked
    byte by byte), print the command line at 0x20000 on port 0x3f8; then power off.
    Only byte loads (LODSB): PVM's instruction emulator returned wrong values for 32-bit
    loads from memory (MOV r32, m32 and LODSD) in this mode."""
    body = b"\x66\xba\xf8\x03" + b"\x89\xde"        # mov dx, 0x3f8; mov esi, ebx
    for i, byte in enumerate(b"\x78\xc5\x6e\x33"):   # the magic 0x336ec578, little-endian
        body += b"\xac\x3c" + bytes([byte]) + b"\x75" + bytes([0x1C - 5 * i])   # lodsb; cmp al, b; jne done
    body += (b"\xbe\x00\x00\x02\x00"                 # mov esi, 0x20000: the command line
             + b"\xac\x84\xc0\x74\x03\xee\xeb\xf8"    # print loop, as in code()
             + b"\x66\xba\x00\x06\xb0\x34\xee"        # done: S5 to port 0x600
             + b"\xf4\xeb\xfd")                      # hlt; jmp hlt
    assert len(body) == 49
    return body


def pvh_elf() -> bytes:
    """An ELF64 kernel with one PT_LOAD at 1 MiB and a XEN_ELFNOTE_PHYS32_ENTRY note."""
    code = pvh_code()
    note = struct.pack("<III", 4, 4, 18) + b"Xen\0" + struct.pack("<I", LOAD_ADDR)
    code_off, note_off = 0x100, 0x100 + len(code)
    ehdr = bytearray(64)
    ehdr[:7] = b"\x7fELF\x02\x01\x01"
    struct.pack_into("<HHIQQQIHHHHHH", ehdr, 16, 2, 62, 1, LOAD_ADDR, 64, 0, 0, 64, 56, 2, 0, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 5, code_off, LOAD_ADDR, LOAD_ADDR, len(code), len(code) + 64, 0x1000)
    pnote = struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(note), len(note), 4)
    image = bytes(ehdr) + load + pnote
    return image + bytes(code_off - len(image)) + code + note
