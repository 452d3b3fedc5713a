"""Standard answers: the library teams keep, the ranking that suggests them, and the
companion an agent sends to the customer in one reply.

:mod:`.library` loads and checks the answer files, :mod:`.fields` fills them in,
:mod:`.analysis` and :mod:`.rank` rank them against the customer's own words,
:mod:`.review` warns about what the library lacks, :mod:`.companion` writes the
companion and keeps its token, :mod:`.reply` turns the agent's reply into the
answer the customer gets. The ``answers`` stage (:mod:`mailflow.stages.answers`)
puts them together.
"""
