//! Integration tests: the real binary against a real PostgreSQL.
