"""Errors the suite raises for bad user input.

Every class derives from :class:`InterpUserError`; the command line prints its message on one line and
exits with status 2, with no traceback. Messages name what was wrong and what is accepted.
"""

from __future__ import annotations


class InterpUserError(ValueError):
    """Bad input from the user: an unknown name, an unreadable file, an out-of-range option."""


class UnknownModelError(InterpUserError):
    """The model name is neither bundled, a test model, a local folder nor a loadable hub name."""


class UnknownAnalysisError(InterpUserError):
    """The analysis name is not registered."""


class PromptError(InterpUserError):
    """The prompt set is empty, unreadable, or does not fit the model."""


class HubUnavailableError(InterpUserError):
    """A hub name was asked for but the model hub cannot be reached."""


class OptionError(InterpUserError):
    """An analysis option is out of range or of the wrong kind."""


class RemoteExecutionError(InterpUserError):
    """A remote (NDIF) run could not be made: no network, no or a rejected API key, a model the server does
    not serve, or a pass the remote model cannot run."""
