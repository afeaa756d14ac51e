"""mappers: mapping spaces, searches and sweeps; :mod:`mappers.base` holds the ``Design`` type and the mapper
registry, which importing this package fills with the built-in mappers (:mod:`mappers.catalog`)."""

from mappers import catalog as _catalog  # noqa: F401  (registers the built-in mappers)
