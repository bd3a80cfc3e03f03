"""Segment Anything: the segmenter (one image, many prompts), automatic masks, the
MobileSAM TinyViT encoder, the fast CPU/GPU paths and the registry of SAM variants."""
