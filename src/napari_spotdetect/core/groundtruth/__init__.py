"""Ground truth: snapping hand-placed spots to their centres, the truth table on disk with undo, and scoring
detections against the truth (precision, recall, F1, F1 integral).

May import: everything in ``core`` below it (``errors``, ``common``, ``io``, ``models``, ``weights``, ``detection``).
"""
