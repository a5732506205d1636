"""Test suite (a package so helpers import as tests.issuer / tests.tokens)."""
