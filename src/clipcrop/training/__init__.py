"""Training: Hungarian matcher, set criterion, the run loop, the decoder trainer and backbone
fine-tuning."""
