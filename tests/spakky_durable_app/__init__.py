"""A spakky application with a durable engine, for tests/test_spakky_durable.py."""
