"""Shared pytest set-up. Fixtures live beside what they serve (tests/support, tests/fakes)
and are imported by the test modules that use them."""
