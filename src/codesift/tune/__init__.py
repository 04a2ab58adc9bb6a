"""`codesift tune`: adapt the index's model to one repository from its own history (see ``run``)."""
