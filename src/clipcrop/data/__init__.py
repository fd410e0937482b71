"""Training and evaluation data: GAIC and TextCrop readers, detection manifests, mosaic augmentation."""
