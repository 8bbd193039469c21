"""kdflow inside other libraries' loops: the Hugging Face Trainer drop-in (:mod:`.hf_trainer`, also importable
as ``kdflow.hf``)."""
