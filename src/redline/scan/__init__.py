"""Front ends that walk sources (files, databases) and turn engine findings into located records."""
