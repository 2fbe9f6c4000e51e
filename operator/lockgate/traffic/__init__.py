"""How traffic moves: one small interface, one router per file."""
