"""Training: the decoder's run (config, planning, net, trainer), backbone fine-tuning (finetune_config,
finetune_data, finetune), their losses and matcher, and the shared run plumbing (runloop,
checkpoints, schedule)."""
