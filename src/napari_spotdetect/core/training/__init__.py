"""Training and fine-tuning: examples, targets, losses, augmentation, synthetic images with known spots, the
:class:`~.train.Trainer`, and :func:`~.finetuning.iter_finetune`, the one fine-tuning entry point of every face.

May import: every other part of ``core`` (it is the top of the engine).
"""
