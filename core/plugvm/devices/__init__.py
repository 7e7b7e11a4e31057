"""The platform's built-in legacy devices (not plugins: every PC has them)."""
