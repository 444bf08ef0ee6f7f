"""Ground truth: snapping hand-placed spots to their centres, the truth table on disk with undo, and scoring
detections against the truth (precision, recall, F1, F1 integral); annotated regions (outside them is
unknown), calibrating a model's threshold from them, and where to annotate next.

May import: everything in ``core`` below it (``errors``, ``common``, ``io``, ``models``, ``weights``, ``detection``).
"""
