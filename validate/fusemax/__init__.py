"""Reproduction of the FuseMax study (Nayak et al., MICRO 2024) from attnscope's general model."""

WORKER_PRELOAD = ("validate.fusemax.warm",)
"""What the forkserver of ``reproduce``'s workers imports (:func:`mappers.workers.pool_context`); kept here, in the
package's light ``__init__``, so that the CLI can start the forkserver before it imports the study itself."""
