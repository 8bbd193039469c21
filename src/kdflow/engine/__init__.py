"""The training engine: one loop for every model (:mod:`.train`), its checkpoints (:mod:`.checkpoint`), the run
folder it writes into (:mod:`.runfolder`, :mod:`.runlog`), processes (:mod:`.distributed`) and a run's shared
handles (:mod:`.run`). Knows nothing of distillation: a loss function is handed to it."""
