"""Ready specs of well-known models, installed with maskc as `maskc.specs` (the YAML files beside this)."""
