"""Framework converters: each turns one framework's objects into a ModelSpec."""
