"""Signing keys: the key model, key identifiers, signing, and (in one module) key files."""
