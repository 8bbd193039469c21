"""Can the numbers be trusted, and what do they say: ``kdflow check`` (:mod:`.check`, :mod:`.baselines`; the
overlap rule itself is :mod:`kdflow.data.leakage`), the auto settings shown by ``kdflow config``
(:mod:`.recipe`), and the report and terminal tables (:mod:`.report`, :mod:`.report_sections`, :mod:`.console`)."""
