"""Canned analyses: which prompts, which attribution modules, which figures.

Each module here registers one analysis with :func:`interp.registry.register`; the command line, the
reports and ``interp.run`` all read that one list.
"""
