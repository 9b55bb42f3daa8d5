"""`rerec fetch`: download, verify by hash and extract the registered datasets and models."""
