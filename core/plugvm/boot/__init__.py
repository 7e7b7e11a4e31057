"""x86-64 direct kernel boot: bzImage (Linux boot protocol) and, later, PVH ELF."""
