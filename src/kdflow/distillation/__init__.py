"""Distillation itself: the loss terms (:mod:`.losses`), the logit-loss table and the student's loss
(:mod:`.distiller`), matched teacher layers (:mod:`.layers`), the critical-layer ranking and layer-selected
students (:mod:`.critical`), and the cache of teacher outputs (:mod:`.teacher_cache`)."""
