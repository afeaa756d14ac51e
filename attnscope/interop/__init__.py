"""Specs in the field's formats, in and out: Timeloop/Accelergy (:mod:`attnscope.interop.timeloop`) and
AccelForge (:mod:`attnscope.interop.accelforge`). An import gives attnscope's own files (an architecture spec, an
``.einsum`` cascade, a mapping); an export gives the other tool's. Whatever one side cannot represent is listed
by dotted key (:class:`~attnscope.interop.common.Converted`), never dropped silently."""
