"""embed: item text (title + description by default) -> frozen-encoder vectors (`item_embeddings`)."""
