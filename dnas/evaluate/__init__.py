"""The evaluation phase: train a genotype's network (supervised, SSL + linear evaluation, or a pruned
model's fine-tuning)."""
