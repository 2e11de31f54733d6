"""Two application processes sharing one saga store (tests/test_recovery_service_processes)."""
