"""submission: check the challenge rules on a run, pack the Codabench zip and the
reproducibility bundle, export a notebook that runs a track end to end."""
