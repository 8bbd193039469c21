"""After training: shrinking a student (:mod:`.prune` vocabulary, :mod:`.heads` attention heads), exporting it
(:mod:`.export` ONNX and int8), measuring quality and cost the same way for every form (:mod:`.measure`,
:mod:`.memprobe`, :mod:`.compare`) and the Pareto fronts of ``kdflow frontier`` (:mod:`.pareto`)."""
