"""Long experiments (reproduction of the book's table, the activation study); never run by tests."""
