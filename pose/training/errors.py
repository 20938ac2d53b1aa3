"""The error every part of train raises for unusable input or state."""


class TrainError(ValueError):
    """Unusable training input: names the folder or file and what is wrong."""
