"""Developer and operator commands behind ``tools/fn``."""
