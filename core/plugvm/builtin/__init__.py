"""Device types that ship with the core, registered through the plugvm entry-point group like any plugin."""
