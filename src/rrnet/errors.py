"""Errors a user can cause: the CLI turns these into one line and exit code 2."""


class RRNetError(Exception):
    """Base class for every error caused by user input (paths, manifests, prompts, checkpoints)."""


class DataError(RRNetError):
    """A relation spec, manifest or exemplar image is missing or malformed."""


class PromptError(RRNetError):
    """A prompt is too long for the text encoder, or a word is not found in it."""


class CheckpointError(RRNetError):
    """A rectifier checkpoint is missing, malformed or does not fit the backbone."""
