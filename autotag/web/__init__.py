"""The web app: autotag serve."""
