"""sid: balanced RQ-KMeans over `item_embeddings` -> one-to-one semantic IDs (`item_sids`)."""
