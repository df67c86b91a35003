"""Why each surviving mutant survives: the record tests/MUTATION.md asks for, checked by `report.py --check`.

A survivor is either *equivalent* (the change cannot alter any result minflow computes, and the reason says
why) or *not killed* (a real change that no test catches yet, and the reason says what test would). A survivor
in neither table is "not explained" and fails `report.py --check`; so does a name here that no longer survives
(a test killed it: take it out). Keys are reasons, values the full mutmut names (`mutmut show NAME`).
"""

EQUIVALENT = {}

NOT_KILLED = {}
