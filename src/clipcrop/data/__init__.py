"""Training data: GAIC and TextCrop readers, mosaic augmentation."""
