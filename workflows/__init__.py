"""Workflows: the whole recipe (store -> pre-training -> fine-tuning -> evaluation -> report)
as one declarative, resumable run of the project's own commands.

``python -m workflows run FILE [--set KEY=VALUE ...]`` runs a workflow file here;
``--address`` submits it to an existing Ray cluster through the Ray Jobs API. The runner
schedules nothing itself: each step is a command (an argument list) with declared inputs
and outputs, and a step is done only when its outputs are complete and valid.
"""
