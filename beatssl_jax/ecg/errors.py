"""The exception raised for a record that cannot be used as it is."""


class RecordError(ValueError):
    """A record is malformed: the message starts with the record's name.

    Subclasses ValueError so callers that only know the builtin still catch it.
    """

    def __init__(self, record: str | None, problem: str):
        self.record = record or "<unnamed record>"
        self.problem = problem
        super().__init__(f"{self.record}: {problem}")
