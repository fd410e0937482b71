"""The paper's pipeline: OWL-ViT backbone, keywords, token selection, the crop decoder and its
checkpoint, training-free composition, raw detections."""
