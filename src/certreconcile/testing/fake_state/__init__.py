"""The in-memory state store, one module per concern; composed by :mod:`certreconcile.testing.fake_repository`."""
