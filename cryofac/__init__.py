"""cryofac: the software that runs a cryo-EM facility end to end.

This small package is the glue: the single ``cryofac`` command and the shared
configuration loader. The four parts live in the top-level packages ``portal``,
``pipeline``, ``workflows`` and ``instrument_env``.
"""

__version__ = "0.1.0"
