"""The PostgreSQL state store, one module per concern; composed by :mod:`certreconcile.actual.repository`."""
