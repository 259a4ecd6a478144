"""Pure, stateless operations: boxes, masks, images."""
