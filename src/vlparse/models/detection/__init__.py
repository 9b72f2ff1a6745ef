"""Box detection from text: anchors and ATSS assignment, the FPN head with token-alignment
logits (FIBER's fine-grained stage) and inference post-processing."""
