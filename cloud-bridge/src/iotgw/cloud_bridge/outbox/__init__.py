"""Transactional outbox: rows written with the change they announce, relayed with confirms."""
