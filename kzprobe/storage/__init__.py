"""The one writer of segments, and reading them back."""
