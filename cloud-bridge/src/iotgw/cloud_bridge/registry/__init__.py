"""The device registry: clients, orders, devices and the transactional outbox (SQLAlchemy 2).

`repository` is the one module the api and the presence process call; `database` opens engines
and runs the Alembic migrations shipped in `migrations/`.
"""
