"""Where models live: an abstract store and its embedded local implementation."""
