"""retrain-edge's workstation side: dataset, bottlenecks, training, conversion, reports.

UserError is the device runtime's own (edge.UserError): the trainer calls edge's code (images,
models, folder names, the HTTP server), so one class lets its errors reach the user as they are.
"""

from edge import UserError

__all__ = ["UserError"]
