"""retrain-edge's device runtime: LiteRT classification of files, folders, cameras and video.

Nothing in this package imports TensorFlow, directly or through a dependency.
"""


class UserError(Exception):
    """A problem with what the user asked for, told as one plain sentence (the CLI exits 2)."""
