"""PCI: configuration space, MSI-X, the segment with its slots and BAR windows."""
