"""A small spakky application the integration test scans (spakky scans a package's modules,
not its `__init__`): `orders` holds a saga and the service the container injects into it."""
