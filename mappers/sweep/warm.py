"""Imported by the local pool's forkserver (:class:`mappers.sweep.runner.LocalPool`): it loads the serial nest kernel
a sweep point runs, so that every worker forked from the server starts with it loaded instead of loading it from
Numba's on-disk cache itself (a few tenths of a second per worker, a sizeable part of a 10,000-point sweep). The
threaded kernel is left alone: threads do not survive a fork."""

from simulator.nest import warm_up

warm_up(parallel=(False,))
