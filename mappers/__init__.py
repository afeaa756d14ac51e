"""mappers."""
