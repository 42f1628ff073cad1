"""Alembic environment: migrations run programmatically by `services.istiod.store.migrate`."""

from alembic import context

from services.istiod.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
