"""Training: one Trainer/accelerate wrapper shared by finetune and distill."""
