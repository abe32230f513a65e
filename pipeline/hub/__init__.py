"""The Hugging Face Hub: every call to `huggingface_hub` (client.py), checkpoint manifests (manifest.py), a
run's revisions verified and pushed (revisions.py), and their command line (`python -m pipeline.hub`)."""
