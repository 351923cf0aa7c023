"""What users do with a model: inference, evaluation, export, visualisation, logs, publishing.

May import models, conversion, hub, loading and the root helpers; nothing imports tasks
except the CLI.
"""
