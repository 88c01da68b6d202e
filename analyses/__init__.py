"""Canned analyses: which prompts, which attribution modules, which figures.

Installed as the package ``interp.analyses`` (pyproject.toml maps this folder there). Each module registers
one analysis with :func:`interp.registry.register`; the command line, the reports and ``interp.run`` all read
that one list.
"""
