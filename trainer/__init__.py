"""retrain-edge's workstation side: dataset, bottlenecks, training, conversion, reports."""


class UserError(Exception):
    """A problem with what the user asked for, told as one plain sentence (the CLI exits 2)."""
