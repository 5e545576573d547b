"""Test rigs: stand-ins for services the tests cannot get here (not shipped)."""
