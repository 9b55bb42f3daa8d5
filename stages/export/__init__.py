"""`rerec export`: a policy as a standalone Hugging Face folder with a model card, and its push
to the Hub."""
