"""Development helpers run from the repository root; not part of the operator."""
