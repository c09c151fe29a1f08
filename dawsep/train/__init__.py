"""Training-side code (torch). Never imported by the runtime."""
