"""Framework converters: each turns one framework's objects into a :class:`~lstm_fast.spec.ModelSpec`."""
