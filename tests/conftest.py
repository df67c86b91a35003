"""Shared test settings: hypothesis profiles and the gpu / slow markers.

HYPOTHESIS_PROFILE=default (fast, for development) or ci (thorough, what `make test-all` runs).
"""

import os

from hypothesis import settings

settings.register_profile("default", max_examples=15, deadline=None)
settings.register_profile("ci", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
