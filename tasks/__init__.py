"""The work of the control plane: one concern per module, plain functions wrapped by thin tasks."""
