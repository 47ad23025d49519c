"""Image and text embeddings (`laionet embed`) and the folder format they are stored in."""
