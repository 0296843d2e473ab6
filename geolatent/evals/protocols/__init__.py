"""Evaluation protocols on top of the encoder: kNN, linear probe, fine-tuning."""
