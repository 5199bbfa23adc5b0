"""The reference tiny model: character-level tokenizer, Llama builder and supervised warm start."""
