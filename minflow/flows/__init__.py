"""The flows: each file teaches one family (see its module docstring)."""

from .base import Flow, Inverse, Sequential
