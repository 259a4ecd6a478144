"""Training and evaluation data: COCO-format datasets, converters, mixing, augmentation."""
